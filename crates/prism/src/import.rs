//! `prism import --config FILE`: loads a TOML file's `[[streams]]` into the
//! cluster's Redis, replacing the cluster's streams as one new version
//! (every node applies it within a second). The file is validated by the
//! same parser a node uses; its tables, comments included, are copied as
//! they are.

use std::path::Path;
use std::process::ExitCode;
use std::time::Duration;

use prism_admin::Config;
use prism_cluster::{Cluster, ClusterSettings, StoreError};
use toml_edit::DocumentMut;

const REDIS_TIMEOUT: Duration = Duration::from_secs(5);

pub fn run(path: &Path, redis: Option<String>, prefix: Option<String>) -> ExitCode {
    match import(path, redis, prefix) {
        Ok(summary) => {
            println!("{summary}");
            ExitCode::SUCCESS
        }
        Err(message) => {
            eprintln!("{message}");
            ExitCode::from(2)
        }
    }
}

fn import(path: &Path, redis: Option<String>, prefix: Option<String>) -> Result<String, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("{}:1:1: cannot read the file: {e}", path.display()))?;
    let config = Config::parse_for_import(path, &text).map_err(|e| e.to_string())?;
    let cluster = config.cluster.as_ref();
    let redis_url = redis
        .or_else(|| cluster.map(|c| c.redis_url.clone()))
        .ok_or_else(|| {
            format!(
                "{}: no Redis to import into: pass --redis URL or give the file a [cluster] section",
                path.display()
            )
        })?;
    let prefix = prefix
        .or_else(|| cluster.map(|c| c.prefix.clone()))
        .unwrap_or_else(|| "prism".to_string());
    let document: DocumentMut = text
        .parse()
        .map_err(|e| format!("{}: {e}", path.display()))?;
    let mut streams = DocumentMut::new();
    if let Some(item) = document.get("streams") {
        streams["streams"] = item.clone();
    }
    let streams_text = streams.to_string();
    let destinations: usize = config.streams.iter().map(|s| s.destinations.len()).sum();

    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the async runtime: {e}"))?;
    let shown = prism_cluster::node::redacted(&redis_url);
    let unreachable = |e: String| format!("cannot reach Redis at {shown}: {e}");
    let (before, version) = runtime.block_on(async {
        let link = Cluster::new(ClusterSettings {
            redis_url: redis_url.clone(),
            node_id: "import".into(),
            lease: Duration::from_secs(5),
            prefix: prefix.clone(),
        })
        .map_err(|e| format!("cluster.redis: {e}"))?;
        let store = link.store();
        let before = match tokio::time::timeout(REDIS_TIMEOUT, store.read())
            .await
            .map_err(|_| unreachable("timed out".into()))?
        {
            Ok(before) => before,
            Err(e @ StoreError::BadVersion { .. }) => {
                return Err(format!("nothing was imported: {e}"))
            }
            Err(e) => return Err(unreachable(e.to_string())),
        };
        match tokio::time::timeout(REDIS_TIMEOUT, store.write(before.version, &streams_text))
            .await
            .map_err(|_| unreachable("timed out".into()))?
        {
            Ok(version) => Ok((before, version)),
            Err(StoreError::Conflict { current }) => Err(format!(
                "the cluster's streams changed while importing (now version {current}); nothing was imported: run the import again"
            )),
            Err(StoreError::Redis(e)) => Err(unreachable(e.to_string())),
            Err(e @ StoreError::BadVersion { .. }) => Err(format!("nothing was imported: {e}")),
        }
    })?;
    let replaced = match before.text.parse::<DocumentMut>() {
        _ if before.version == 0 => "nothing".to_string(),
        Ok(old) => format!(
            "{} streams",
            old.get("streams")
                .and_then(|s| s.as_array_of_tables())
                .map_or(0, |s| s.len())
        ),
        Err(_) => "an unreadable document".to_string(),
    };
    Ok(format!(
        "imported {} streams ({destinations} destinations) from {} into {shown} (prefix {prefix:?}) as version {version}, replacing version {} ({replaced})",
        config.streams.len(),
        path.display(),
        before.version,
    ))
}
