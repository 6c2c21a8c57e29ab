//! Defaults live in one place. `config/prism.toml` shows every setting's
//! default as a commented line (`# key = value  # what it does`); the code
//! has its own defaults, and `docs/configuration.md` shows them again. This
//! test holds the three together: the example file with each shown default
//! written out parses to exactly the configuration it parses to without
//! them, and every default the reference shows is the one the file shows.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use prism_admin::config::Config;

/// Commented lines that are examples or alternatives, not defaults.
const NOT_DEFAULTS: [&str; 18] = [
    "passphrase",
    "srt_passphrase",
    "standby_file",
    "token_file",
    "insecure_no_auth",
    "allowed_hosts",
    "redis",
    "node_id",
    "backup_pull",
    "id",
    "url",
    "pull",
    "key",
    "listen",
    "auth",
    "secret",
    "events",
    "ca_file",
];

/// Sections whose presence turns a feature on (the admin API, cluster
/// mode, publish authorisation): their defaults are compared, never
/// written out.
const OPTIONAL_SECTIONS: [&str; 3] = ["[admin]", "[cluster]", "[auth]"];

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// `(section, key) → value` of the commented `# key = value  # …` lines:
/// the defaults a file shows. The section is the last table header above,
/// commented or not.
fn shown_defaults(text: &str) -> BTreeMap<(String, String), String> {
    let mut section = String::new();
    let mut defaults = BTreeMap::new();
    for line in text.lines() {
        let bare = line.trim().trim_start_matches('#').trim();
        if bare.starts_with('[') {
            section = bare.split_whitespace().next().unwrap_or("").to_string();
            continue;
        }
        if !line.trim_start().starts_with('#') {
            continue;
        }
        let Some((key, rest)) = bare.split_once(" = ") else {
            continue;
        };
        let key = key.trim();
        if key.is_empty() || !key.chars().all(|c| c.is_ascii_lowercase() || c == '_') {
            continue;
        }
        if NOT_DEFAULTS.contains(&key) {
            continue;
        }
        let value = rest.split("  #").next().unwrap_or("").trim().to_string();
        defaults.insert((section.clone(), key.to_string()), value);
    }
    defaults
}

/// The example with each commented default written out, under its section
/// (a commented section header is written out too when it has one).
fn with_defaults_written_out(text: &str) -> String {
    let defaults = shown_defaults(text);
    let mut out = String::new();
    let mut section = String::new();
    // Whether the lines below belong to a table the file has (an
    // uncommented header, or a commented one written out here).
    let mut live = true;
    let mut written = std::collections::HashSet::new();
    for line in text.lines() {
        let commented = line.trim_start().starts_with('#');
        let bare = line.trim().trim_start_matches('#').trim();
        if bare.starts_with('[') {
            section = bare.split_whitespace().next().unwrap_or("").to_string();
            live = !commented;
            if commented {
                let has_default = defaults.keys().any(|(s, _)| *s == section);
                // Repeated tables and sections that turn a feature on are
                // left as they are.
                let single = !section.starts_with("[[");
                let optional = OPTIONAL_SECTIONS.contains(&section.as_str());
                if has_default && single && !optional && written.insert(section.clone()) {
                    out.push_str(&section);
                    out.push('\n');
                    live = true;
                    continue;
                }
            }
            out.push_str(line);
            out.push('\n');
            continue;
        }
        if commented && live {
            if let Some((key, _)) = bare.split_once(" = ") {
                if let Some(value) = defaults.get(&(section.clone(), key.trim().to_string())) {
                    out.push_str(&format!("{} = {value}\n", key.trim()));
                    continue;
                }
            }
        }
        out.push_str(line);
        out.push('\n');
    }
    out
}

#[test]
fn the_defaults_the_example_shows_are_the_code_defaults() {
    let text = std::fs::read_to_string(workspace().join("config/prism.toml")).unwrap();
    // Parsed as if it lay in a folder of its own: its admin token file is
    // made there on a first read, as on an operator's first run.
    let folder = std::env::temp_dir().join(format!("prism-example-{}", std::process::id()));
    std::fs::create_dir_all(&folder).unwrap();
    let path = folder.join("prism.toml");
    let shown = shown_defaults(&text);
    assert!(
        shown.len() > 25,
        "the example shows its defaults as `# key = value` lines: {shown:?}"
    );
    let written_out = with_defaults_written_out(&text);
    assert_ne!(written_out, text);
    let as_is = Config::parse(&path, &text).unwrap();
    let explicit = Config::parse(&path, &written_out).unwrap_or_else(|e| {
        panic!("{e}\n--- the example with its defaults written out:\n{written_out}")
    });
    assert_eq!(
        format!("{explicit:?}"),
        format!("{as_is:?}"),
        "a default shown in config/prism.toml differs from the code's"
    );
    let _ = std::fs::remove_dir_all(&folder);
}

#[test]
fn the_reference_shows_the_defaults_of_the_example() {
    let example =
        shown_defaults(&std::fs::read_to_string(workspace().join("config/prism.toml")).unwrap());
    let reference = std::fs::read_to_string(workspace().join("docs/configuration.md")).unwrap();
    let block = reference
        .split("```toml")
        .nth(1)
        .and_then(|rest| rest.split("```").next())
        .expect("docs/configuration.md has a toml block");
    let shown = shown_defaults(block);
    let mut compared = 0;
    for ((section, key), value) in &shown {
        if let Some(expected) = example.get(&(section.clone(), key.clone())) {
            assert_eq!(
                value, expected,
                "docs/configuration.md shows {section} {key} = {value}; config/prism.toml shows {expected}"
            );
            compared += 1;
        }
    }
    assert!(compared > 20, "only {compared} defaults compared");
}
