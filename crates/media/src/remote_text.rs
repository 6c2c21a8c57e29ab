//! Text that came from a peer (a server's onStatus description, a pull
//! source's refusal, a publisher's stream name or arguments, a panic's
//! message) is data, never log syntax: control characters are escaped so it
//! cannot start a forged log line or drive a terminal, and its length is
//! capped so a peer cannot make Prism keep or repeat megabytes of it.

use std::fmt::Write;

/// The most bytes of one peer's text that Prism keeps, logs or reports.
pub const MAX_REMOTE_TEXT: usize = 512;

/// `text` with every control character (newlines, CR, ESC, BEL, DEL, the C1
/// range, Unicode line and paragraph separators and bidirectional overrides)
/// written as `\n`, `\r`, `\t` or `\u{..}`, cut to at most
/// [`MAX_REMOTE_TEXT`] bytes; a cut text ends in `…`.
pub fn remote_text(text: &str) -> String {
    let mut out = String::with_capacity(text.len().min(MAX_REMOTE_TEXT));
    for c in text.chars() {
        let before = out.len();
        match c {
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\\' => out.push_str("\\\\"),
            c if needs_escape(c) => {
                let _ = write!(out, "\\u{{{:x}}}", c as u32);
            }
            c => out.push(c),
        }
        if out.len() > MAX_REMOTE_TEXT - '…'.len_utf8() {
            out.truncate(before);
            out.push('…');
            break;
        }
    }
    out
}

/// Like [`remote_text`], for bytes that may not be UTF-8 (invalid sequences
/// become U+FFFD before escaping).
pub fn remote_bytes(bytes: &[u8]) -> String {
    let end = bytes.len().min(MAX_REMOTE_TEXT * 4);
    remote_text(&String::from_utf8_lossy(&bytes[..end]))
}

fn needs_escape(c: char) -> bool {
    c.is_control()
        || matches!(c,
            '\u{2028}' | '\u{2029}'              // line and paragraph separators
            | '\u{200e}' | '\u{200f}'            // direction marks
            | '\u{202a}'..='\u{202e}'            // bidirectional embeddings and overrides
            | '\u{2066}'..='\u{2069}'            // bidirectional isolates
            | '\u{feff}')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_characters_are_escaped() {
        assert_eq!(
            remote_text("a\nb\r\x1b[2J\x07\x7f\u{85}\u{2028}\u{202e}"),
            "a\\nb\\r\\u{1b}[2J\\u{7}\\u{7f}\\u{85}\\u{2028}\\u{202e}"
        );
        assert_eq!(remote_text("plain text, ünïcode"), "plain text, ünïcode");
        // A backslash is escaped too, so an escaped newline cannot be forged
        // by sending the two characters `\n`.
        assert_eq!(remote_text("\\n"), "\\\\n");
    }

    #[test]
    fn long_text_is_cut_on_a_character_boundary() {
        let long = "é".repeat(10_000);
        let cut = remote_text(&long);
        assert!(cut.len() <= MAX_REMOTE_TEXT);
        assert!(cut.ends_with('…'));
        let escapes = "\n".repeat(10_000);
        let cut = remote_text(&escapes);
        assert!(cut.len() <= MAX_REMOTE_TEXT, "{}", cut.len());
        assert!(cut.starts_with("\\n\\n"));
    }

    #[test]
    fn bytes_that_are_not_utf8_are_replaced() {
        assert_eq!(remote_bytes(b"ok\xff\n"), "ok\u{fffd}\\n");
    }

    #[test]
    fn no_output_holds_a_control_character() {
        for c in (0..0x3000u32).filter_map(char::from_u32) {
            let text = format!("x{c}y");
            let out = remote_text(&text);
            assert!(
                !out.chars()
                    .any(|o| o.is_control() || o == '\u{2028}' || o == '\u{2029}'),
                "{c:?} -> {out:?}"
            );
        }
    }
}
