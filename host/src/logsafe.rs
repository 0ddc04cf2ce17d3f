//! Text from cells in the host log: one log line stays one line, so a cell
//! cannot forge host lines (or terminal escapes) with what it logs.

use std::fmt;

/// Displays `text` with line breaks and other control characters escaped.
pub struct Escaped<'a>(pub &'a str);

impl fmt::Display for Escaped<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut clean = 0;
        for (at, c) in self.0.char_indices() {
            let escape = match c {
                '\n' => "\\n",
                '\r' => "\\r",
                '\t' => "\\t",
                c if c.is_control() || c == '\u{2028}' || c == '\u{2029}' => "",
                _ => continue,
            };
            f.write_str(&self.0[clean..at])?;
            if escape.is_empty() {
                write!(f, "\\u{{{:x}}}", c as u32)?;
            } else {
                f.write_str(escape)?;
            }
            clean = at + c.len_utf8();
        }
        f.write_str(&self.0[clean..])
    }
}

#[cfg(test)]
mod tests {
    use super::Escaped;

    #[test]
    fn line_breaks_and_controls_are_escaped() {
        let forged = "ok\n2026-01-01T00:00:00Z  INFO supervisor: cell started cell=\"admin\"\r\x1b[2J\u{2028}é";
        let shown = Escaped(forged).to_string();
        assert!(!shown.contains(['\n', '\r', '\x1b', '\u{2028}']), "{shown}");
        assert_eq!(
            shown,
            "ok\\n2026-01-01T00:00:00Z  INFO supervisor: cell started cell=\"admin\"\\r\\u{1b}[2J\\u{2028}é"
        );
        assert_eq!(Escaped("plain text").to_string(), "plain text");
    }
}
