//! Model and version names: what may appear in a URL path and a directory name.

/// Longest accepted name, in bytes.
pub const MAX_NAME_LEN: usize = 128;

/// A name is 1..=128 ASCII letters, digits, `_`, `-` or `.`, and does not start
/// with `.` (so never `.` or `..`). Anything else is refused before it reaches
/// a map lookup, a log line or a file path.
pub fn is_valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_NAME_LEN
        && !name.starts_with('.')
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'))
}

/// `name` as a [`is_valid_name`], or an invalid-input error naming the field `what`.
pub fn check_name(what: &str, name: &str) -> Result<(), crate::Error> {
    if is_valid_name(name) {
        Ok(())
    } else {
        Err(crate::Error::invalid_input(format!(
            "{what}: {} is not a valid name (letters, digits, '_', '-', '.')",
            quoted(name)
        )))
    }
}

/// A short, printable rendering of untrusted text for error messages.
pub fn quoted(text: &str) -> String {
    let mut s: String = text.chars().take(64).flat_map(char::escape_debug).collect();
    if text.chars().count() > 64 {
        s.push('…');
    }
    format!("'{s}'")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_ordinary_names() {
        for n in ["fraud", "breast_cancer", "v1.2-rc", "1", "A_b-c.d"] {
            assert!(is_valid_name(n), "{n}");
        }
    }

    #[test]
    fn refuses_paths_and_oddities() {
        for n in ["", ".", "..", "../x", "a/b", "a\\b", ".hidden", "a b", "é", "a\0", "%2e%2e", &"x".repeat(129)] {
            assert!(!is_valid_name(n), "{n:?}");
        }
    }

    #[test]
    fn quoting_is_short_and_escaped() {
        assert_eq!(quoted("a\nb"), "'a\\nb'");
        assert_eq!(quoted(&"x".repeat(100)).chars().count(), 64 + 3);
    }
}
