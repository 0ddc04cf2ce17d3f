//! SQL text as the built-in provider takes it, made ready for Postgres: `?`
//! placeholders become `$n`, and the words that decide how a call is run are
//! picked out. String literals, quoted identifiers, dollar-quoted bodies and
//! comments are copied untouched.

/// What the extension needs to know about one statement (or script).
#[derive(Debug, PartialEq, Eq)]
pub struct Prepared {
    /// The text with `?` and `?N` rewritten to `$n` / `$N`.
    pub text: String,
    /// The first keyword, upper-cased (`INSERT`, `BEGIN`...); empty when none.
    pub first: String,
    /// Whether a word that may open or close a transaction block appears
    /// anywhere: the call must then check where the connection stands.
    pub transaction_control: bool,
}

/// Words after which the connection may be inside or outside a transaction
/// block. `DO` and `CALL` run code that may commit.
const TRANSACTION_WORDS: &[&str] = &[
    "ABORT",
    "BEGIN",
    "CALL",
    "COMMIT",
    "DO",
    "END",
    "PREPARE",
    "RELEASE",
    "ROLLBACK",
    "SAVEPOINT",
    "START",
];

pub fn prepare(sql: &str) -> Prepared {
    let bytes = sql.as_bytes();
    let mut text = String::with_capacity(sql.len() + 8);
    let mut first = String::new();
    let mut transaction_control = false;
    let mut next_param = 0u32;
    // Start of the run of `sql` not yet copied into `text`.
    let mut copied = 0;
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        let end = match b {
            b'\'' => {
                // E'...' strings take backslash escapes; others only ''.
                let escapes = i > 0 && bytes[i - 1].eq_ignore_ascii_case(&b'e') && {
                    let before = i.checked_sub(2).map(|j| bytes[j]);
                    !is_word_byte(before)
                };
                quoted(bytes, i, b'\'', escapes)
            }
            b'"' => quoted(bytes, i, b'"', false),
            b'-' if bytes.get(i + 1) == Some(&b'-') => bytes[i..]
                .iter()
                .position(|&c| c == b'\n')
                .map_or(bytes.len(), |n| i + n + 1),
            b'/' if bytes.get(i + 1) == Some(&b'*') => block_comment(bytes, i),
            b'$' => dollar_quoted(bytes, i).unwrap_or(i + 1),
            b'?' => {
                text.push_str(&sql[copied..i]);
                let digits = bytes[i + 1..]
                    .iter()
                    .take_while(|c| c.is_ascii_digit())
                    .count();
                if digits > 0 {
                    // `?N` names its parameter, as SQLite allows.
                    text.push('$');
                    text.push_str(&sql[i + 1..i + 1 + digits]);
                } else {
                    next_param += 1;
                    text.push('$');
                    text.push_str(&next_param.to_string());
                }
                copied = i + 1 + digits;
                i = copied;
                continue;
            }
            c if is_word_byte(Some(c)) && !(i > 0 && is_word_byte(Some(bytes[i - 1]))) => {
                let len = bytes[i..]
                    .iter()
                    .take_while(|&&c| is_word_byte(Some(c)))
                    .count();
                let word = sql[i..i + len].to_ascii_uppercase();
                if TRANSACTION_WORDS.contains(&word.as_str()) {
                    transaction_control = true;
                }
                if first.is_empty() && !word.as_bytes()[0].is_ascii_digit() {
                    first = word;
                }
                i + len
            }
            _ => i + 1,
        };
        i = end.max(i + 1);
    }
    text.push_str(&sql[copied..]);
    Prepared {
        text,
        first,
        transaction_control,
    }
}

/// SQLite's `BEGIN DEFERRED | IMMEDIATE | EXCLUSIVE [TRANSACTION]` as a plain
/// `BEGIN`, which Postgres accepts: its row locks make the lock-mode hint moot.
/// Anything else comes back as it is.
pub fn sqlite_begin(text: &str) -> &str {
    let words: Vec<String> = text
        .trim()
        .trim_end_matches(';')
        .split_ascii_whitespace()
        .map(str::to_ascii_uppercase)
        .collect();
    let words: Vec<&str> = words.iter().map(String::as_str).collect();
    match words.as_slice() {
        ["BEGIN", "DEFERRED" | "IMMEDIATE" | "EXCLUSIVE"]
        | ["BEGIN", "DEFERRED" | "IMMEDIATE" | "EXCLUSIVE", "TRANSACTION"] => "BEGIN",
        _ => text,
    }
}

fn is_word_byte(b: Option<u8>) -> bool {
    b.is_some_and(|b| b.is_ascii_alphanumeric() || b == b'_' || b >= 0x80)
}

/// The end of a literal opened by `quote` at `start`; a doubled quote is an
/// escaped one. Unterminated: the rest of the text.
fn quoted(bytes: &[u8], start: usize, quote: u8, backslash_escapes: bool) -> usize {
    let mut i = start + 1;
    while i < bytes.len() {
        match bytes[i] {
            b'\\' if backslash_escapes => i += 2,
            c if c == quote && bytes.get(i + 1) == Some(&quote) => i += 2,
            c if c == quote => return i + 1,
            _ => i += 1,
        }
    }
    bytes.len()
}

/// The end of a `/* */` comment, which nests in Postgres.
fn block_comment(bytes: &[u8], start: usize) -> usize {
    let mut depth = 0;
    let mut i = start;
    while i + 1 < bytes.len() {
        match (bytes[i], bytes[i + 1]) {
            (b'/', b'*') => {
                depth += 1;
                i += 2;
            }
            (b'*', b'/') => {
                depth -= 1;
                i += 2;
                if depth == 0 {
                    return i;
                }
            }
            _ => i += 1,
        }
    }
    bytes.len()
}

/// The end of a `$tag$ ... $tag$` body opened at `start`, or `None` when the
/// `$` does not open one (`$1`, a `$` inside a word).
fn dollar_quoted(bytes: &[u8], start: usize) -> Option<usize> {
    if start > 0 && is_word_byte(Some(bytes[start - 1])) {
        return None;
    }
    let tag_len = bytes[start + 1..]
        .iter()
        .take_while(|&&c| c.is_ascii_alphanumeric() || c == b'_' || c >= 0x80)
        .count();
    let close = start + 1 + tag_len;
    if bytes.get(close) != Some(&b'$') || bytes.get(start + 1).is_some_and(u8::is_ascii_digit) {
        return None;
    }
    let tag = &bytes[start..=close];
    let body = close + 1;
    Some(
        bytes[body..]
            .windows(tag.len())
            .position(|w| w == tag)
            .map_or(bytes.len(), |n| body + n + tag.len()),
    )
}

#[cfg(test)]
mod tests {
    use super::prepare;

    #[test]
    fn placeholders_become_numbered_outside_literals() {
        let p = prepare("SELECT ?, '?', \"a?\", ? -- ?\n, /* ? /* ? */ ? */ ?");
        assert_eq!(
            p.text,
            "SELECT $1, '?', \"a?\", $2 -- ?\n, /* ? /* ? */ ? */ $3"
        );
        assert_eq!(p.first, "SELECT");
        assert!(!p.transaction_control);
    }

    #[test]
    fn escapes_and_dollar_quotes_are_skipped() {
        let p = prepare("INSERT INTO t VALUES ('it''s ?', E'\\' ?', $f$ ? $f$, $$?$$, ?)");
        assert_eq!(
            p.text,
            "INSERT INTO t VALUES ('it''s ?', E'\\' ?', $f$ ? $f$, $$?$$, $1)"
        );
        // A plain string ending in a backslash does not swallow what follows.
        assert_eq!(prepare("SELECT 'a\\', ?").text, "SELECT 'a\\', $1");
        // Numbered and native placeholders pass through.
        assert_eq!(prepare("SELECT ?2, ?1, $1").text, "SELECT $2, $1, $1");
    }

    #[test]
    fn sqlite_lock_modes_become_a_plain_begin() {
        assert_eq!(super::sqlite_begin("BEGIN IMMEDIATE"), "BEGIN");
        assert_eq!(
            super::sqlite_begin(" begin exclusive transaction; "),
            "BEGIN"
        );
        assert_eq!(
            super::sqlite_begin("BEGIN ISOLATION LEVEL SERIALIZABLE"),
            "BEGIN ISOLATION LEVEL SERIALIZABLE"
        );
    }

    #[test]
    fn transaction_words_are_seen_outside_literals_only() {
        assert!(prepare("begin").transaction_control);
        assert_eq!(prepare("  begin immediate").first, "BEGIN");
        assert!(prepare("INSERT INTO t VALUES (1); COMMIT").transaction_control);
        assert!(!prepare("SELECT 'commit', \"end\" -- rollback").transaction_control);
        assert!(!prepare("SELECT begin_at FROM t").transaction_control);
        assert!(prepare("DO $$ BEGIN END $$").transaction_control);
        assert_eq!(prepare("/* c */ -- x\n WITH a AS (SELECT 1)").first, "WITH");
    }
}
