//! tmpfiles.d lines: the one place that formats them. systemd-tmpfiles
//! unescapes C escapes in the path field and expands `%` specifiers in the
//! path and the argument, so untrusted names (from packages) go through here.

use anyhow::{Result, bail};

/// `path` as a tmpfiles.d path field: `%` doubled, quotes, backslashes,
/// spaces and bytes outside printable ASCII written as `\xNN`.
pub fn escape_path(path: &str) -> String {
    let mut out = String::with_capacity(path.len());
    for b in path.bytes() {
        match b {
            b'%' => out.push_str("%%"),
            b'\\' | b'"' | b'\'' => out.push_str(&format!("\\x{b:02x}")),
            0x21..=0x7e => out.push(b as char),
            _ => out.push_str(&format!("\\x{b:02x}")),
        }
    }
    out
}

/// `L PATH - - - - TARGET`: a symlink created at boot. The argument is the
/// rest of the line and is not unescaped, so a target that cannot be written
/// literally (control characters, backslashes, surrounding spaces) is an error.
pub fn symlink_line(path: &str, target: &str) -> Result<String> {
    if target.is_empty() || target.trim() != target || target.chars().any(|c| c.is_control() || c == '\\') {
        bail!(
            "the symlink target {:?} of {path} cannot be written in a tmpfiles.d line",
            target.escape_debug().to_string()
        );
    }
    Ok(format!("L {} - - - - {}", escape_path(path), target.replace('%', "%%")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_are_escaped() {
        assert_eq!(escape_path("/dev/a b%c\\"), "/dev/a\\x20b%%c\\x5c");
        assert_eq!(escape_path("/opt/é"), "/opt/\\xc3\\xa9");
    }

    #[test]
    fn symlink_lines_escape_the_path_and_refuse_unwritable_targets() {
        assert_eq!(
            symlink_line("/opt/My App", "../../usr/lib/opt/My App").unwrap(),
            "L /opt/My\\x20App - - - - ../../usr/lib/opt/My App"
        );
        assert_eq!(
            symlink_line("/opt/50%", "../../usr/lib/opt/50%").unwrap(),
            "L /opt/50%% - - - - ../../usr/lib/opt/50%%"
        );
        for bad in ["a\nb", "a\\b", " a", ""] {
            assert!(symlink_line("/opt/x", bad).is_err(), "{bad:?}");
        }
    }
}
