// Prism console: plain JavaScript, no build step. Everything it shows comes
// from the admin API (/v1), called with the operator's token; changes arrive
// live from /v1/events (read with fetch, since EventSource cannot send the
// Authorization header) and trigger a fresh read of /v1/streams.

const TOKEN_STORAGE = "prism-admin-token";
const REFRESH_MS = 2000;
/** The recordings lists are read at most this often (or on a recording event). */
const RECORDINGS_MS = 10000;
const GRAPH_SECONDS = 300;
const MAX_EVENTS = 200;

const $ = (selector, root = document) => root.querySelector(selector);

let token = null;
let eventsAbort = null;
let refreshTimer = null;
let thumbnailTimer = null;
let refreshSoon = null;
let platforms = [];
const streamElements = new Map();
/** Per stream: [{t, kbps}] for the bitrate graph. */
const bitrateHistory = new Map();
/** Per `stream/destination`: the last {t, bytes} seen, and the rate from it. */
const destinationRates = new Map();
/** When the recordings lists were last read. */
let recordingsReadAt = 0;
/** Per stream: the AbortController of its live preview while it runs. */
const previews = new Map();
/** A preview further behind its newest frame than this jumps ahead (s). */
const PREVIEW_MAX_BEHIND = 1.5;
/** Thumbnails are drawn from the previews this often (ms). */
const THUMBNAIL_MS = 2000;

function init() {
  const fragment = new URLSearchParams(location.hash.slice(1));
  if (fragment.get("token")) {
    sessionStorage.setItem(TOKEN_STORAGE, fragment.get("token"));
    // The token leaves the address bar (and the history) at once.
    history.replaceState(null, "", location.pathname + location.search);
  }
  token = sessionStorage.getItem(TOKEN_STORAGE);
  $("#login-form").addEventListener("submit", onLogin);
  $("#sign-out").addEventListener("click", () => signOut(""));
  $("#add-stream-form").addEventListener("submit", onAddStream);
  $("#book-form").addEventListener("submit", onBook);
  if (token) {
    start();
  } else {
    showLogin("");
  }
}

function showLogin(message) {
  $("#login").hidden = false;
  $("#app").hidden = true;
  $("#sign-out").hidden = true;
  $("#login-error").textContent = message;
  setConnection("idle", "not connected");
  $("#token").focus();
}

async function onLogin(event) {
  event.preventDefault();
  token = $("#token").value.trim();
  try {
    await api("GET", "/v1/streams");
  } catch (error) {
    return;
  }
  sessionStorage.setItem(TOKEN_STORAGE, token);
  $("#token").value = "";
  start();
}

function signOut(message) {
  token = null;
  sessionStorage.removeItem(TOKEN_STORAGE);
  if (eventsAbort) eventsAbort.abort();
  for (const id of [...previews.keys()]) stopPreview(id);
  clearInterval(refreshTimer);
  showLogin(message);
}

class ApiError extends Error {}

/** Calls the API; a refused token signs out, other errors throw their message. */
async function api(method, path, body) {
  const headers = { Authorization: `Bearer ${token}` };
  // Every change carries it, body or not: the API refuses changes without
  // it, which is what keeps other sites' pages from making them.
  if (method !== "GET") headers["Content-Type"] = "application/json";
  const response = await fetch(path, {
    method,
    headers,
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const text = await response.text();
  const data = text ? JSON.parse(text) : null;
  if (response.status === 401) {
    signOut("The token was refused.");
    throw new ApiError("the token was refused");
  }
  if (!response.ok) {
    throw new ApiError(data && data.error ? data.error.message : `HTTP ${response.status}`);
  }
  return data;
}

async function start() {
  $("#login").hidden = true;
  $("#app").hidden = false;
  $("#sign-out").hidden = false;
  try {
    platforms = await api("GET", "/v1/platforms");
  } catch (error) {
    platforms = [];
  }
  await refresh();
  clearInterval(refreshTimer);
  refreshTimer = setInterval(refresh, REFRESH_MS);
  clearInterval(thumbnailTimer);
  thumbnailTimer = setInterval(drawThumbnails, THUMBNAIL_MS);
  listenToEvents();
}

function setConnection(kind, text) {
  const pill = $("#connection");
  pill.className = `pill ${kind}`;
  pill.textContent = text;
}

async function refresh() {
  if (!token) return;
  try {
    render(await api("GET", "/v1/streams"));
    renderSchedule(await api("GET", "/v1/schedule"));
  } catch (error) {
    if (token) setConnection("failed", "disconnected");
    return;
  }
  if (Date.now() - recordingsReadAt >= RECORDINGS_MS) await refreshRecordings();
}

/** Reads the recordings on disk into each stream's list. */
async function refreshRecordings() {
  recordingsReadAt = Date.now();
  let recordings;
  try {
    recordings = await api("GET", "/v1/recordings");
  } catch (error) {
    return;
  }
  for (const [id, element] of streamElements) {
    renderRecordings(element, recordings.filter((r) => r.stream === id));
  }
}

function renderRecordings(element, recordings) {
  const rows = recordings
    .slice()
    .reverse()
    .map((recording) => {
      const row = document.createElement("tr");
      row.dataset.recording = recording.id;
      const name = document.createElement("td");
      name.textContent = new Date(recording.started_at).toLocaleString();
      name.title = recording.id;
      if (!recording.complete) name.append(" (being written, or cut short)");
      const length = document.createElement("td");
      length.textContent = formatDuration(recording.duration_s * 1000);
      const size = document.createElement("td");
      size.textContent = formatBytes(recording.bytes);
      const link = document.createElement("td");
      const anchor = document.createElement("a");
      anchor.href = recording.download_url;
      anchor.download = recording.file.split("/").pop();
      anchor.textContent = "Download";
      link.append(anchor);
      row.append(name, length, size, link);
      return row;
    });
  $(".recordings tbody", element).replaceChildren(...rows);
  $(".recordings", element).hidden = rows.length === 0;
  $(".no-recordings", element).hidden = rows.length > 0;
}

/** The schedule's entries in three lists: live now, upcoming, history. */
function renderSchedule(entries) {
  const lists = { live: [], upcoming: [], history: [] };
  for (const entry of entries) {
    const list = entry.status === "in-progress" ? "live" : entry.status === "upcoming" ? "upcoming" : "history";
    lists[list].push(scheduleItem(entry));
  }
  lists.history.reverse();
  for (const [name, items] of Object.entries(lists)) {
    const list = $(`#schedule-${name}`);
    // An entry being edited keeps its form until it is saved or closed.
    if (list.querySelector("form")) continue;
    list.replaceChildren(...(items.length ? items : [emptyItem()]));
  }
  const select = $("#book-form select[name=stream]");
  const chosen = select.value;
  select.replaceChildren(
    ...[...streamElements.keys()].map((id) => {
      const option = document.createElement("option");
      option.value = option.textContent = id;
      return option;
    }),
  );
  if (chosen) select.value = chosen;
}

function emptyItem() {
  const item = document.createElement("li");
  item.className = "muted";
  item.textContent = "—";
  return item;
}

function scheduleItem(entry) {
  const item = document.createElement("li");
  item.dataset.entry = entry.id;
  const when = `${new Date(entry.starts_at).toLocaleString()} – ${new Date(entry.ends_at).toLocaleTimeString()}`;
  const what = entry.source
    ? `plays ${entry.source.files.join(", ")}${entry.source.loop ? " (loop)" : ""}`
    : `takes ${entry.destinations ? entry.destinations.join(", ") : "every destination"} live`;
  const parts = [`${entry.title} · ${entry.stream} · ${when} · ${what}`];
  if (entry.has_key) parts.push("event key");
  if (entry.failure) parts.push(entry.failure);
  const sent = entry.outcome.map((o) => `${o.destination}: ${formatBytes(o.bytes)}, ${o.dropped_frames} dropped`);
  if (sent.length) parts.push(sent.join("; "));
  const text = document.createElement("span");
  text.textContent = parts.join(" · ");
  const status = document.createElement("span");
  status.className = `pill entry-status ${entry.status}`;
  status.textContent = entry.status;
  item.append(status, " ", text);
  if (entry.status === "upcoming") {
    const edit = document.createElement("button");
    edit.type = "button";
    edit.className = "edit";
    edit.textContent = "Edit";
    edit.addEventListener("click", () => editEntry(item, entry));
    item.append(" ", edit);
  }
  if (entry.status === "upcoming" || entry.status === "in-progress") {
    const cancel = document.createElement("button");
    cancel.type = "button";
    cancel.className = "cancel danger";
    cancel.textContent = entry.status === "upcoming" ? "Cancel" : "End now";
    cancel.addEventListener("click", async () => {
      try {
        await api("DELETE", `/v1/schedule/${enc(entry.id)}`);
      } catch (error) {
        text.textContent = error.message;
      }
      scheduleRefresh();
    });
    item.append(" ", cancel);
  }
  return item;
}

/** A `datetime-local` value for an RFC 3339 time, in this browser's zone. */
function localInput(rfc3339) {
  const at = new Date(rfc3339);
  return new Date(at.getTime() - at.getTimezoneOffset() * 60000).toISOString().slice(0, 19);
}

function editEntry(item, entry) {
  const form = document.createElement("form");
  form.className = "inline";
  form.innerHTML = `<label>Title <input name="title"></label>
    <label>Starts <input name="starts_at" type="datetime-local" step="1" required></label>
    <label>Ends <input name="ends_at" type="datetime-local" step="1" required></label>
    <button type="submit">Save</button> <button type="button" class="close">Close</button>
    <p class="error" role="alert"></p>`;
  form.elements["title"].value = entry.title;
  form.elements["starts_at"].value = localInput(entry.starts_at);
  form.elements["ends_at"].value = localInput(entry.ends_at);
  form.querySelector(".close").addEventListener("click", () => {
    form.remove();
    scheduleRefresh();
  });
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    try {
      await api("PATCH", `/v1/schedule/${enc(entry.id)}`, {
        title: form.elements["title"].value,
        starts_at: new Date(form.elements["starts_at"].value).toISOString(),
        ends_at: new Date(form.elements["ends_at"].value).toISOString(),
      });
      form.remove();
    } catch (error) {
      form.querySelector(".error").textContent = error.message;
    }
    scheduleRefresh();
  });
  item.append(form);
}

async function onBook(event) {
  event.preventDefault();
  const form = event.target;
  const field = (name) => form.elements[name].value.trim();
  const list = (name) =>
    field(name)
      .split(",")
      .map((part) => part.trim())
      .filter(Boolean);
  const body = {
    stream: field("stream"),
    starts_at: new Date(field("starts_at")).toISOString(),
    ends_at: new Date(field("ends_at")).toISOString(),
  };
  if (field("title")) body.title = field("title");
  if (list("destinations").length) body.destinations = list("destinations");
  if (list("files").length) body.source = { file: list("files"), loop: form.elements["loop"].checked };
  if (form.elements["key"].checked) body.key = true;
  try {
    const entry = await api("POST", "/v1/schedule", body);
    $("#book-error").textContent = "";
    $("#book-key").textContent = entry.key
      ? `Its stream key (shown this once): ${entry.key}`
      : "";
    form.reset();
  } catch (error) {
    $("#book-error").textContent = error.message;
  }
  scheduleRefresh();
}

/** Refreshes shortly after a burst of events, once. */
function scheduleRefresh() {
  clearTimeout(refreshSoon);
  refreshSoon = setTimeout(refresh, 100);
}

async function listenToEvents() {
  while (token) {
    eventsAbort = new AbortController();
    try {
      const response = await fetch("/v1/events", {
        headers: { Authorization: `Bearer ${token}` },
        signal: eventsAbort.signal,
      });
      if (response.status === 401) {
        signOut("The token was refused.");
        return;
      }
      if (response.ok) {
        setConnection("live", "live");
        const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
        let buffer = "";
        for (;;) {
          const { value, done } = await reader.read();
          if (done) break;
          buffer += value;
          let end;
          while ((end = buffer.indexOf("\n\n")) >= 0) {
            handleEvent(buffer.slice(0, end));
            buffer = buffer.slice(end + 2);
          }
        }
      }
    } catch (error) {
      if (!token) return;
    }
    setConnection("retrying", "reconnecting");
    await new Promise((resolve) => setTimeout(resolve, 2000));
  }
}

function handleEvent(block) {
  let type = "message";
  let data = "";
  for (const line of block.split("\n")) {
    if (line.startsWith("event:")) type = line.slice(6).trim();
    else if (line.startsWith("data:")) data += line.slice(5).trim();
  }
  if (!data) return;
  let event;
  try {
    event = JSON.parse(data);
  } catch (error) {
    return;
  }
  logEvent(type, event);
  if (type.startsWith("recording_")) recordingsReadAt = 0;
  scheduleRefresh();
}

function describeEvent(type, e) {
  switch (type) {
    case "publish_start":
      return `${e.stream}: publish started (${e.protocol} from ${e.remote})`;
    case "publish_stop":
      return `${e.stream}: publish stopped`;
    case "destination_state":
      return `${e.stream} → ${e.destination}: ${e.state}${e.error ? ` (${e.error.kind}: ${e.error.message})` : ""}`;
    case "standby_start":
      return `${e.stream}: standby (${e.reason})`;
    case "standby_stop":
      return `${e.stream}: standby ended`;
    case "source_switch":
      return e.to
        ? `${e.stream}: on the ${e.to} (${e.reason})`
        : `${e.stream}: no source on air (${e.reason})`;
    case "config_changed":
      return `configuration changed (${e.source}${e.stream ? `, ${e.stream}` : ""})`;
    case "recording_start":
      return `${e.stream}: recording to ${e.file} (${e.reason})`;
    case "recording_segment":
      return `${e.stream}: recorded ${e.file} (${formatDuration(e.duration_s * 1000)}, ${formatBytes(e.bytes)})`;
    case "recording_stop":
      return `${e.stream}: recording stopped${e.error ? ` (${e.error.kind}: ${e.error.message})` : ""}`;
    case "schedule_start":
      return `${e.stream}: "${e.title}" started`;
    case "schedule_end":
      return `${e.stream}: "${e.title}" ${e.status}${e.failure ? ` (${e.failure})` : ""}`;
    default:
      return type;
  }
}

function logEvent(type, event) {
  const list = $("#events");
  const item = document.createElement("li");
  const time = document.createElement("time");
  const at = event.timestamp ? new Date(event.timestamp) : new Date();
  time.dateTime = at.toISOString();
  time.textContent = at.toLocaleTimeString();
  item.append(time, describeEvent(type, event));
  list.prepend(item);
  while (list.children.length > MAX_EVENTS) list.lastElementChild.remove();
}

function render(streams) {
  const seen = new Set();
  for (const stream of streams) {
    seen.add(stream.id);
    let element = streamElements.get(stream.id);
    if (!element) {
      element = createStream(stream.id);
      streamElements.set(stream.id, element);
      $("#streams").append(element);
    }
    updateStream(element, stream);
    // A preview is asked for only while there is something to show.
    if (stream.live) {
      startPreview(element, stream.id);
    } else {
      stopPreview(stream.id);
      $(".preview", element).hidden = true;
      $(".preview-note", element).textContent = "The stream is not live";
    }
  }
  for (const [id, element] of streamElements) {
    if (!seen.has(id)) {
      stopPreview(id);
      element.remove();
      streamElements.delete(id);
      bitrateHistory.delete(id);
    }
  }
  renderStreamList(streams);
}

/** The list of streams at the top: a thumbnail, the name and the state. */
function renderStreamList(streams) {
  const list = $("#stream-list");
  const items = streams.map((stream) => {
    let item = $(`[data-stream="${CSS.escape(stream.id)}"]`, list);
    if (!item) {
      item = document.createElement("li");
      item.dataset.stream = stream.id;
      const link = document.createElement("a");
      link.href = "#";
      link.addEventListener("click", (event) => {
        event.preventDefault();
        streamElements.get(stream.id)?.scrollIntoView({ behavior: "smooth" });
      });
      const thumb = document.createElement("canvas");
      thumb.width = 160;
      thumb.height = 90;
      thumb.setAttribute("role", "img");
      thumb.setAttribute("aria-label", `Stream ${stream.id}, thumbnail`);
      const name = document.createElement("span");
      name.className = "list-name";
      const state = document.createElement("span");
      state.className = "pill list-state";
      link.append(thumb, name, state);
      item.append(link);
    }
    $(".list-name", item).textContent = stream.id;
    const state = streamState(stream);
    $(".list-state", item).className = `pill list-state ${state}`;
    $(".list-state", item).textContent = state;
    return item;
  });
  list.replaceChildren(...items);
}

function createStream(id) {
  const element = $("#stream-template").content.firstElementChild.cloneNode(true);
  element.dataset.stream = id;
  element.setAttribute("aria-label", `Stream ${id}`);
  $(".stream-id", element).textContent = id;
  $(".remove-stream", element).addEventListener("click", () => removeStream(id));
  $(".show-key", element).addEventListener("click", () => toggleKey(element, id));
  for (const source of ["primary", "backup", "auto"]) {
    $(`.use-${source}`, element).addEventListener("click", () => chooseSource(element, id, source));
  }
  const form = $(".add-destination-form", element);
  const select = $("select[name=platform]", form);
  for (const platform of platforms.filter((p) => p.url)) {
    const option = document.createElement("option");
    option.value = platform.id;
    option.textContent = platform.name || platform.id;
    select.append(option);
  }
  select.addEventListener("change", () => {
    $(".url-field", form).hidden = select.value !== "";
  });
  form.addEventListener("submit", (event) => addDestination(event, id, form));
  const record = $(".record", element);
  record.setAttribute("aria-label", `Record ${id}`);
  record.addEventListener("change", async () => {
    record.disabled = true;
    try {
      await api("PUT", `/v1/streams/${enc(id)}/record`, { on: record.checked });
      $(".record-error", element).textContent = "";
    } catch (error) {
      record.checked = !record.checked;
      $(".record-error", element).textContent = error.message;
    }
    record.disabled = false;
    recordingsReadAt = 0;
    scheduleRefresh();
  });
  element.destinationElements = new Map();
  return element;
}

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

/** Plays the stream that goes out in the card's <video>, for as long as the
 * card is there: the server sends fragmented MP4, appended to a Media
 * Source; a session that ends or changes codecs starts a new one. */
function startPreview(element, id) {
  if (previews.has(id)) return;
  const abort = new AbortController();
  previews.set(id, abort);
  runPreview(element, id, abort.signal).finally(() => {
    if (previews.get(id) === abort) previews.delete(id);
  });
}

function stopPreview(id) {
  const abort = previews.get(id);
  if (abort) abort.abort();
  previews.delete(id);
}

async function runPreview(element, id, signal) {
  const video = $(".preview", element);
  const note = $(".preview-note", element);
  const show = (message) => {
    note.textContent = message;
    video.hidden = Boolean(message) && !video.dataset.audioOnly;
  };
  while (token && !signal.aborted) {
    let response;
    try {
      response = await fetch(`/v1/streams/${enc(id)}/preview`, {
        headers: { Authorization: `Bearer ${token}` },
        signal,
      });
    } catch (error) {
      if (signal.aborted) return;
      show("Preview: reconnecting");
      await sleep(2000);
      continue;
    }
    if (!response.ok) {
      let message = `Preview unavailable (${response.status})`;
      try {
        message = (await response.json()).error.message;
      } catch (error) {
        // The status says enough.
      }
      show(message.charAt(0).toUpperCase() + message.slice(1));
      await sleep(3000);
      continue;
    }
    const codecs = response.headers.get("X-Prism-Codecs") || "";
    const mime = `video/mp4; codecs="${codecs}"`;
    if (!window.MediaSource || !MediaSource.isTypeSupported(mime)) {
      response.body.cancel().catch(() => {});
      show(`This browser cannot play the stream's codecs (${codecs})`);
      await sleep(10000);
      continue;
    }
    const hasVideo = response.headers.get("X-Prism-Video") === "yes";
    video.dataset.audioOnly = hasVideo ? "" : "yes";
    show(hasVideo ? "" : "Audio only: no picture");
    video.hidden = false;
    await playPreview(video, response, mime, signal);
  }
}

async function playPreview(video, response, mime, signal) {
  const source = new MediaSource();
  const url = URL.createObjectURL(source);
  video.src = url;
  await new Promise((resolve) => source.addEventListener("sourceopen", resolve, { once: true }));
  URL.revokeObjectURL(url);
  const buffer = source.addSourceBuffer(mime);
  const pending = [];
  const append = () => {
    if (buffer.updating || pending.length === 0 || source.readyState !== "open") return;
    buffer.appendBuffer(pending.shift());
  };
  buffer.addEventListener("updateend", () => {
    const ranges = buffer.buffered;
    if (ranges.length) {
      const start = ranges.start(0);
      const end = ranges.end(ranges.length - 1);
      // Live: never far behind the newest frame.
      if (video.currentTime < start || end - video.currentTime > PREVIEW_MAX_BEHIND) {
        video.currentTime = Math.max(ranges.start(ranges.length - 1), end - 0.3);
      }
      // What was played long ago goes, so a tab left open stays small.
      if (video.currentTime - start > 30) {
        buffer.remove(start, video.currentTime - 10);
        return;
      }
    }
    if (video.paused) video.play().catch(() => {});
    append();
  });
  const reader = response.body.getReader();
  try {
    while (!signal.aborted) {
      const { done, value } = await reader.read();
      if (done) break;
      pending.push(value);
      append();
    }
  } catch (error) {
    // Aborted or the connection dropped: the caller starts again.
  }
  reader.cancel().catch(() => {});
}

/** Each stream's thumbnail in the list, drawn by the browser from its
 * preview (Prism never decodes video). */
function drawThumbnails() {
  for (const [id, element] of streamElements) {
    const video = $(".preview", element);
    const thumb = document.querySelector(`#stream-list [data-stream="${CSS.escape(id)}"] canvas`);
    if (!thumb || video.readyState < 2 || !video.videoWidth) continue;
    thumb.getContext("2d").drawImage(video, 0, 0, thumb.width, thumb.height);
    thumb.dataset.drawn = "yes";
  }
}

/** The record switch, the recorder's state and the file being written. */
function updateRecording(element, stream) {
  const record = $(".record", element);
  if (!record.disabled) record.checked = stream.record;
  const recorder = stream.recording;
  const pill = $(".record-state", element);
  const state = recorder ? recorder.state : "off";
  pill.className = `pill record-state ${state}`;
  pill.textContent = state;
  const current = recorder && recorder.current;
  $(".record-now", element).textContent = current
    ? `Writing ${current.id}: ${formatDuration(current.duration_s * 1000)}, ${formatBytes(current.bytes)}`
    : "";
  const failure = recorder && recorder.last_error;
  if (!$(".record-error", element).textContent || failure) {
    $(".record-error", element).textContent =
      failure && state === "failed" ? `${failure.message} [${failure.kind}] (retrying by itself)` : "";
  }
}

/** Forces a source on air, or returns to automatic failover. */
async function chooseSource(element, streamId, source) {
  try {
    await api("PUT", `/v1/streams/${enc(streamId)}/source`, { source });
    $(".source-error", element).textContent = "";
  } catch (error) {
    $(".source-error", element).textContent = error.message;
  }
  scheduleRefresh();
}

function describeSource(source) {
  const picture = source.width ? ` ${source.width}x${source.height}` : "";
  const state = source.on_air ? "on air" : source.live ? "ready" : "silent";
  return `${source.role}: ${source.protocol}${picture}, ${formatKbps(source.bitrate_kbps)} (${state})`;
}

/** One track of the stream, as a line: "video 1: h264 320x180, 25 fps, 300 kbit/s, keyframe every 2 s". */
function describeTrack(track) {
  const parts = [track.codec || "unknown codec"];
  if (track.width) parts[0] += ` ${track.width}x${track.height}`;
  if (track.fps) parts.push(`${track.fps} fps`);
  if (track.sample_rate) parts.push(`${track.sample_rate / 1000} kHz${track.channels ? ` ×${track.channels}` : ""}`);
  parts.push(formatKbps(track.bitrate_kbps));
  if (track.keyframe_interval_ms) parts.push(`keyframe every ${Math.round(track.keyframe_interval_ms / 100) / 10} s`);
  const name = track.id === 0 ? `${track.kind} 0 (default)` : `${track.kind} ${track.id}`;
  return `${name}: ${parts.join(", ")}`;
}

function streamState(stream) {
  if (stream.standby) return "standby";
  return stream.live ? "live" : "idle";
}

function updateStream(element, stream) {
  const state = streamState(stream);
  const pill = $(".state", element);
  pill.className = `pill state ${state}`;
  pill.textContent = state;
  const ingest = stream.ingest;
  const set = (selector, text) => {
    $(selector, element).textContent = text;
  };
  set(".protocol", ingest ? ingest.protocol : "—");
  set(".remote", ingest ? ingest.remote : "—");
  set(".codecs", ingest ? [ingest.video_codec, ingest.audio_codec].filter(Boolean).join(" + ") || "—" : "—");
  set(".resolution", ingest && ingest.width ? `${ingest.width}x${ingest.height}` : "—");
  set(".fps", ingest && ingest.fps ? `${Math.round(ingest.fps * 100) / 100} fps` : "—");
  set(".bitrate", ingest ? formatKbps(ingest.bitrate_kbps) : "—");
  set(".on-air-for", ingest ? formatDuration(Date.now() - Date.parse(ingest.since)) : "—");
  set(".warnings", (stream.warnings || []).join(" "));
  set(".pull", stream.pull || "— (encoders publish)");
  set(".active-source", stream.active_source || "—");
  set(".source-choice", stream.source_choice === "auto" ? "" : `(forced: ${stream.source_choice})`);
  const tracks = stream.tracks || [];
  $(".tracks", element).replaceChildren(
    ...(tracks.length ? tracks : [null]).map((track) => {
      const item = document.createElement("li");
      item.textContent = track ? describeTrack(track) : "—";
      return item;
    }),
  );
  const sources = $(".sources", element);
  sources.replaceChildren(
    ...(stream.sources || []).map((source) => {
      const item = document.createElement("li");
      item.dataset.source = source.role;
      item.textContent = describeSource(source);
      return item;
    }),
  );
  $(".show-key", element).hidden = Boolean(stream.pull);
  updateRecording(element, stream);

  const history = bitrateHistory.get(stream.id) || [];
  const now = Date.now();
  history.push({ t: now, kbps: ingest ? ingest.bitrate_kbps : 0 });
  while (history.length && history[0].t < now - GRAPH_SECONDS * 1000) history.shift();
  bitrateHistory.set(stream.id, history);
  drawGraph($(".graph", element), history, now);

  const list = $(".destinations", element);
  const seen = new Set();
  for (const destination of stream.destinations) {
    seen.add(destination.id);
    let item = element.destinationElements.get(destination.id);
    if (!item) {
      item = createDestination(stream.id, destination.id);
      element.destinationElements.set(destination.id, item);
      list.append(item);
    }
    updateDestination(item, stream.id, destination, now);
  }
  for (const [id, item] of element.destinationElements) {
    if (!seen.has(id)) {
      item.remove();
      element.destinationElements.delete(id);
    }
  }
}

function drawGraph(canvas, history, now) {
  const context = canvas.getContext("2d");
  const { width, height } = canvas;
  context.clearRect(0, 0, width, height);
  const style = getComputedStyle(document.documentElement);
  context.strokeStyle = style.getPropertyValue("--line").trim() || "#ccc";
  context.beginPath();
  context.moveTo(0, height - 0.5);
  context.lineTo(width, height - 0.5);
  context.stroke();
  if (history.length < 2) return;
  // The window grows with the history, from 10 s to GRAPH_SECONDS, so
  // the first seconds draw across the graph, not squeezed at its edge.
  const span = Math.min(GRAPH_SECONDS * 1000, Math.max(10 * 1000, now - history[0].t));
  const max = Math.max(100, ...history.map((p) => p.kbps)) * 1.1;
  context.strokeStyle = style.getPropertyValue("--accent").trim() || "#2557d6";
  context.lineWidth = 2;
  context.beginPath();
  history.forEach((point, index) => {
    const x = width - ((now - point.t) / span) * width;
    const y = height - (point.kbps / max) * (height - 4) - 2;
    if (index === 0) context.moveTo(x, y);
    else context.lineTo(x, y);
  });
  context.stroke();
}

function createDestination(streamId, destinationId) {
  const item = $("#destination-template").content.firstElementChild.cloneNode(true);
  item.dataset.destination = destinationId;
  const toggle = $(".enabled", item);
  toggle.setAttribute("aria-label", `Send to ${destinationId}`);
  toggle.addEventListener("change", async () => {
    toggle.disabled = true;
    const action = toggle.checked ? "enable" : "disable";
    try {
      await api("PUT", `/v1/streams/${enc(streamId)}/destinations/${enc(destinationId)}/${action}`);
      $(".dest-error", item).textContent = "";
    } catch (error) {
      toggle.checked = !toggle.checked;
      $(".dest-error", item).textContent = error.message;
    }
    toggle.disabled = false;
    scheduleRefresh();
  });
  const form = $(".edit-form", item);
  $(".edit", item).addEventListener("click", () => {
    form.hidden = !form.hidden;
    if (!form.hidden) {
      $("input[name=url]", form).value = item.dataset.url || "";
      $("input[name=url]", form).focus();
    }
  });
  $(".cancel", item).addEventListener("click", () => {
    form.hidden = true;
  });
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const patch = {};
    const url = $("input[name=url]", form).value.trim();
    const key = $("input[name=key]", form).value;
    if (url) patch.url = url;
    if (key) patch.key = key;
    try {
      await api("PATCH", `/v1/streams/${enc(streamId)}/destinations/${enc(destinationId)}`, patch);
      form.hidden = true;
      $("input[name=key]", form).value = "";
      $(".error", form).textContent = "";
    } catch (error) {
      $(".error", form).textContent = error.message;
    }
    scheduleRefresh();
  });
  $(".remove", item).addEventListener("click", async () => {
    if (!confirm(`Remove destination ${destinationId}?`)) return;
    try {
      await api("DELETE", `/v1/streams/${enc(streamId)}/destinations/${enc(destinationId)}`);
    } catch (error) {
      $(".dest-error", item).textContent = error.message;
    }
    scheduleRefresh();
  });
  return item;
}

function updateDestination(item, streamId, destination, now) {
  const platform = platforms.find((p) => p.id === destination.platform);
  $(".dest-name", item).textContent = platform ? `${destination.id} · ${platform.name || platform.id}` : destination.id;
  const toggle = $(".enabled", item);
  if (!toggle.disabled) toggle.checked = destination.enabled;
  const pill = $(".dest-state", item);
  pill.className = `pill dest-state ${destination.state}`;
  pill.textContent = destination.state;
  if (!$(".dest-error", item).textContent || destination.last_error) {
    const failure = destination.last_error;
    $(".dest-error", item).textContent = failure ? `${failure.message} [${failure.kind}]` : "";
  }
  item.dataset.url = destination.url;
  $(".dest-url", item).textContent = destination.key_hint ? `${destination.url} (key ${destination.key_hint})` : destination.url;
  const key = `${streamId}/${destination.id}`;
  // The rate over at least a second: refreshes that follow events come
  // milliseconds apart.
  const last = destinationRates.get(key);
  if (!last || destination.bytes_sent < last.bytes) {
    destinationRates.set(key, { t: now, bytes: destination.bytes_sent, kbps: 0 });
  } else if (now - last.t >= 1000) {
    const kbps = ((destination.bytes_sent - last.bytes) * 8) / (now - last.t);
    destinationRates.set(key, { t: now, bytes: destination.bytes_sent, kbps });
  }
  const kbps = destinationRates.get(key).kbps;
  $(".dest-bitrate", item).textContent = destination.state === "live" ? formatKbps(kbps) : "—";
  $(".dest-tracks", item).textContent = destination.tracks === "all" ? "all (every track)" : "default (track 0)";
  $(".dest-delay", item).textContent = destination.delay_s ? `${destination.delay_s} s behind` : "live";
  $(".dest-warnings", item).replaceChildren(
    ...(destination.warnings || []).map((warning) => {
      const line = document.createElement("li");
      line.dataset.code = warning.code;
      line.textContent = warning.message;
      return line;
    }),
  );
  $(".dest-dropped", item).textContent = String(destination.dropped_frames);
  $(".dest-reconnects", item).textContent = String(destination.reconnects);
  $(".dest-uptime", item).textContent = destination.live_since
    ? formatDuration(now - Date.parse(destination.live_since))
    : "—";
}

async function toggleKey(element, streamId) {
  const button = $(".show-key", element);
  const keyField = $(".stream-key", element);
  if (button.dataset.shown === "yes") {
    keyField.textContent = "hidden";
    button.textContent = "Show key";
    button.dataset.shown = "no";
    return;
  }
  try {
    const settings = await api("GET", `/v1/streams/${enc(streamId)}/key`);
    $(".server-url", element).textContent = settings.rtmp_url;
    $(".srt-url", element).textContent = settings.srt_url || "— (SRT ingest is off)";
    keyField.textContent = settings.key;
    button.textContent = "Hide key";
    button.dataset.shown = "yes";
  } catch (error) {
    keyField.textContent = error.message;
  }
}

async function addDestination(event, streamId, form) {
  event.preventDefault();
  const value = (name) => $(`[name=${name}]`, form).value.trim();
  const body = {};
  if (value("id")) body.id = value("id");
  if (value("platform")) body.platform = value("platform");
  else if (value("url")) body.url = value("url");
  if (value("key")) body.key = value("key");
  try {
    await api("POST", `/v1/streams/${enc(streamId)}/destinations`, body);
    form.reset();
    $(".url-field", form).hidden = false;
    $(".error", form).textContent = "";
  } catch (error) {
    $(".error", form).textContent = error.message;
  }
  scheduleRefresh();
}

async function onAddStream(event) {
  event.preventDefault();
  const form = event.target;
  const body = { id: form.elements["id"].value.trim() };
  const pull = form.elements["pull"].value.trim();
  if (pull) body.pull = pull;
  try {
    await api("POST", "/v1/streams", body);
    form.reset();
    $("#add-stream-error").textContent = "";
  } catch (error) {
    $("#add-stream-error").textContent = error.message;
  }
  scheduleRefresh();
}

async function removeStream(id) {
  if (!confirm(`Remove stream ${id} and its destinations?`)) return;
  try {
    await api("DELETE", `/v1/streams/${enc(id)}`);
  } catch (error) {
    $("#add-stream-error").textContent = error.message;
  }
  scheduleRefresh();
}

function enc(part) {
  return encodeURIComponent(part);
}

function formatKbps(kbps) {
  if (kbps >= 1000) return `${(kbps / 1000).toFixed(2)} Mbit/s`;
  return `${Math.round(kbps)} kbit/s`;
}

function formatBytes(bytes) {
  if (bytes >= 1 << 30) return `${(bytes / (1 << 30)).toFixed(2)} GiB`;
  if (bytes >= 1 << 20) return `${(bytes / (1 << 20)).toFixed(1)} MiB`;
  if (bytes >= 1 << 10) return `${Math.round(bytes / (1 << 10))} KiB`;
  return `${bytes} B`;
}

function formatDuration(ms) {
  const seconds = Math.max(0, Math.floor(ms / 1000));
  const h = Math.floor(seconds / 3600);
  const m = Math.floor((seconds % 3600) / 60);
  const s = seconds % 60;
  return h ? `${h}h ${m}m` : m ? `${m}m ${s}s` : `${s}s`;
}

init();
