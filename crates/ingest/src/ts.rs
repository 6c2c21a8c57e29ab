//! MPEG-TS demultiplexing for SRT ingest: TS packets in, elementary-stream
//! frames (one PES packet each, with its PTS/DTS) out. Sans-IO.
//!
//! PAT/PMT parsing, PES reassembly and continuity-counter checks come from
//! `mpeg2ts-reader`; this module adds what a network feed needs around it:
//! resynchronising on the 0x47 sync byte after garbage or a torn datagram,
//! buffering partial packets across reads, and flagging frames that lost
//! data so the remuxer can drop to the next keyframe instead of relaying
//! broken pictures.

use bytes::{Bytes, BytesMut};
use mpeg2ts_reader::demultiplex::{self, DemuxContext, FilterChangeset, FilterRequest};
use mpeg2ts_reader::{packet, pes, psi, StreamType};

const PACKET_SIZE: usize = 188;
const SYNC_BYTE: u8 = 0x47;
/// A PES payload larger than this is not a frame any encoder sends; it is
/// cut off (and the frame marked damaged) instead of growing without bound.
const MAX_PES_BYTES: usize = 16 * 1024 * 1024;

/// The codec of an elementary stream Prism relays.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EsCodec {
    H264,
    Hevc,
    /// AAC in ADTS framing.
    AacAdts,
}

/// One PES packet of a stream Prism relays.
#[derive(Clone, Debug)]
pub struct EsFrame {
    pub codec: EsCodec,
    /// 90 kHz, 33 bits, as carried (wraps at 2^33).
    pub pts: u64,
    pub dts: u64,
    pub data: Bytes,
    /// Data of this frame (or right before it) was lost.
    pub damaged: bool,
}

/// Collects finished frames; the demux context the filters write into.
pub struct TsContext {
    changeset: FilterChangeset<TsFilter>,
    frames: Vec<EsFrame>,
}

impl DemuxContext for TsContext {
    type F = TsFilter;

    fn filter_changeset(&mut self) -> &mut FilterChangeset<TsFilter> {
        &mut self.changeset
    }

    fn construct(&mut self, request: FilterRequest<'_, '_>) -> TsFilter {
        match request {
            FilterRequest::ByPid(psi::pat::PAT_PID) => {
                TsFilter::Pat(demultiplex::PatPacketFilter::default())
            }
            FilterRequest::ByPid(_) => TsFilter::Null(demultiplex::NullPacketFilter::default()),
            FilterRequest::ByStream { stream_type, .. } => {
                let codec = match stream_type {
                    StreamType::H264 => EsCodec::H264,
                    StreamType::H265 => EsCodec::Hevc,
                    StreamType::ADTS => EsCodec::AacAdts,
                    _ => return TsFilter::Null(demultiplex::NullPacketFilter::default()),
                };
                TsFilter::Pes(pes::PesPacketFilter::new(FrameCollector::new(codec)))
            }
            FilterRequest::Pmt {
                pid,
                program_number,
            } => TsFilter::Pmt(demultiplex::PmtPacketFilter::new(pid, program_number)),
            FilterRequest::Nit { .. } => TsFilter::Null(demultiplex::NullPacketFilter::default()),
        }
    }
}

mpeg2ts_reader::packet_filter_switch! {
    TsFilter<TsContext> {
        Pes: pes::PesPacketFilter<TsContext, FrameCollector>,
        Pat: demultiplex::PatPacketFilter<TsContext>,
        Pmt: demultiplex::PmtPacketFilter<TsContext>,
        Null: demultiplex::NullPacketFilter<TsContext>,
    }
}

/// Reassembles one elementary stream's PES packets into frames.
pub struct FrameCollector {
    codec: EsCodec,
    current: Option<(u64, u64)>,
    data: BytesMut,
    damaged: bool,
}

impl FrameCollector {
    fn new(codec: EsCodec) -> Self {
        Self {
            codec,
            current: None,
            data: BytesMut::new(),
            damaged: false,
        }
    }

    fn append(&mut self, bytes: &[u8]) {
        if self.data.len() + bytes.len() > MAX_PES_BYTES {
            self.damaged = true;
            return;
        }
        self.data.extend_from_slice(bytes);
    }
}

impl pes::ElementaryStreamConsumer<TsContext> for FrameCollector {
    fn start_stream(&mut self, _ctx: &mut TsContext) {}

    fn begin_packet(&mut self, _ctx: &mut TsContext, header: pes::PesHeader<'_>) {
        self.data.clear();
        self.current = None;
        if let pes::PesContents::Parsed(Some(parsed)) = header.contents() {
            let times = match parsed.pts_dts() {
                Ok(pes::PtsDts::PtsOnly(Ok(pts))) => Some((pts.value(), pts.value())),
                Ok(pes::PtsDts::Both {
                    pts: Ok(pts),
                    dts: Ok(dts),
                }) => Some((pts.value(), dts.value())),
                _ => None,
            };
            // A PES without a timestamp cannot be placed on the timeline.
            self.current = times;
            self.append(parsed.payload());
        }
    }

    fn continue_packet(&mut self, _ctx: &mut TsContext, data: &[u8]) {
        if self.current.is_some() {
            self.append(data);
        }
    }

    fn end_packet(&mut self, ctx: &mut TsContext) {
        if let Some((pts, dts)) = self.current.take() {
            if !self.data.is_empty() {
                ctx.frames.push(EsFrame {
                    codec: self.codec,
                    pts,
                    dts,
                    data: self.data.split().freeze(),
                    damaged: std::mem::take(&mut self.damaged),
                });
            }
        }
        self.data.clear();
    }

    fn continuity_error(&mut self, _ctx: &mut TsContext) {
        self.damaged = true;
    }
}

/// Turns a TS byte stream into frames.
pub struct TsDemuxer {
    context: TsContext,
    demux: demultiplex::Demultiplex<TsContext>,
    /// A partial packet carried to the next push.
    pending: Vec<u8>,
    /// Bytes skipped while looking for sync; reported to the caller.
    pub skipped_bytes: u64,
}

impl Default for TsDemuxer {
    fn default() -> Self {
        Self::new()
    }
}

impl TsDemuxer {
    pub fn new() -> Self {
        let mut context = TsContext {
            changeset: FilterChangeset::default(),
            frames: Vec::new(),
        };
        let demux = demultiplex::Demultiplex::new(&mut context);
        Self {
            context,
            demux,
            pending: Vec::with_capacity(PACKET_SIZE),
            skipped_bytes: 0,
        }
    }

    /// Feeds bytes (any split); appends every frame completed to `out`.
    pub fn push(&mut self, mut bytes: &[u8], out: &mut Vec<EsFrame>) {
        if !self.pending.is_empty() {
            let need = PACKET_SIZE - self.pending.len();
            let take = need.min(bytes.len());
            self.pending.extend_from_slice(&bytes[..take]);
            bytes = &bytes[take..];
            if self.pending.len() < PACKET_SIZE {
                return;
            }
            let packet = std::mem::take(&mut self.pending);
            self.push_aligned(&packet);
            self.pending = packet;
            self.pending.clear();
        }
        while !bytes.is_empty() {
            // Find the next sync byte that starts a packet.
            let Some(start) = bytes.iter().position(|&b| b == SYNC_BYTE) else {
                self.skipped_bytes += bytes.len() as u64;
                break;
            };
            self.skipped_bytes += start as u64;
            bytes = &bytes[start..];
            // Take the run of whole packets that each start with a sync byte.
            let mut run = 0;
            while run + PACKET_SIZE <= bytes.len() && bytes[run] == SYNC_BYTE {
                run += PACKET_SIZE;
            }
            if run == 0 {
                // A partial packet at the end: keep it for the next push.
                self.pending.extend_from_slice(bytes);
                break;
            }
            self.push_aligned(&bytes[..run]);
            bytes = &bytes[run..];
            if !bytes.is_empty() && bytes[0] != SYNC_BYTE {
                // Lost sync mid-buffer: skip this byte and search again.
                self.skipped_bytes += 1;
                bytes = &bytes[1..];
            }
        }
        out.append(&mut self.context.frames);
    }

    fn push_aligned(&mut self, packets: &[u8]) {
        debug_assert!(packets.len().is_multiple_of(PACKET_SIZE));
        self.demux.push(&mut self.context, packets);
    }
}

/// A TS packet's PID, for tests that drop or corrupt packets of one stream.
pub fn packet_pid(packet: &[u8]) -> Option<u16> {
    packet::Packet::try_new(packet).map(|p| p.pid().into())
}
