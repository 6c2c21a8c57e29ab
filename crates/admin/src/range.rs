//! HTTP byte ranges (RFC 9110 14.1.2), read for serving recordings: one
//! range, `bytes=START-END`, `bytes=START-` or `bytes=-SUFFIX`. Several
//! ranges are answered with the whole file, as the RFC allows.

/// How to answer a request for a file of `len` bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Answer {
    /// 200, the whole file.
    Whole,
    /// 206, bytes `start..=end`.
    Part { start: u64, end: u64 },
    /// 416: the range lies past the end.
    Unsatisfiable,
}

/// Reads a `Range` header (absent: `None`) against a file of `len` bytes.
pub fn answer(range: Option<&str>, len: u64) -> Answer {
    let Some(spec) = range.and_then(|r| r.trim().strip_prefix("bytes=")) else {
        return Answer::Whole;
    };
    if spec.contains(',') {
        return Answer::Whole;
    }
    let Some((first, last)) = spec.trim().split_once('-') else {
        return Answer::Whole;
    };
    let number = |s: &str| -> Option<u64> {
        let s = s.trim();
        (!s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()))
            .then(|| s.parse().ok())
            .flatten()
    };
    match (number(first), number(last), last.trim().is_empty()) {
        // bytes=-SUFFIX: the last SUFFIX bytes.
        (None, Some(suffix), _) if first.trim().is_empty() => {
            if suffix == 0 || len == 0 {
                return Answer::Unsatisfiable;
            }
            Answer::Part {
                start: len.saturating_sub(suffix),
                end: len - 1,
            }
        }
        (Some(start), None, true) if start < len => Answer::Part {
            start,
            end: len - 1,
        },
        (Some(start), Some(end), _) if start <= end && start < len => Answer::Part {
            start,
            end: end.min(len - 1),
        },
        (Some(_), _, _) => Answer::Unsatisfiable,
        _ => Answer::Whole,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_as_curl_and_browsers_send_them() {
        assert_eq!(answer(None, 100), Answer::Whole);
        assert_eq!(
            answer(Some("bytes=0-"), 100),
            Answer::Part { start: 0, end: 99 }
        );
        // curl -C -: from where the partial download stopped.
        assert_eq!(
            answer(Some("bytes=40-"), 100),
            Answer::Part { start: 40, end: 99 }
        );
        assert_eq!(
            answer(Some("bytes=10-19"), 100),
            Answer::Part { start: 10, end: 19 }
        );
        assert_eq!(
            answer(Some("bytes=90-200"), 100),
            Answer::Part { start: 90, end: 99 }
        );
        assert_eq!(
            answer(Some("bytes=-10"), 100),
            Answer::Part { start: 90, end: 99 }
        );
        assert_eq!(
            answer(Some("bytes=-500"), 100),
            Answer::Part { start: 0, end: 99 }
        );
        assert_eq!(answer(Some("bytes=100-"), 100), Answer::Unsatisfiable);
        assert_eq!(answer(Some("bytes=20-10"), 100), Answer::Unsatisfiable);
        assert_eq!(answer(Some("bytes=-0"), 100), Answer::Unsatisfiable);
        assert_eq!(answer(Some("bytes=0-1,5-6"), 100), Answer::Whole);
        assert_eq!(answer(Some("items=0-1"), 100), Answer::Whole);
        assert_eq!(answer(Some("bytes=x-1"), 100), Answer::Whole);
    }
}
