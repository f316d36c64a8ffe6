//! Caller text: which characters a name may carry (something visible, no bidi controls), and how
//! caller text is shown in a log line (escaped, bounded) so it can never forge or flood one.

use std::fmt;

use crate::ods::OdsCode;

/// Most characters of one caller value a log line shows: enough to recognise, too few to flood.
pub const MAX_LOGGED_CHARS: usize = 64;

/// Bidirectional formatting controls (Unicode Bidi_Control): they reorder what a reader sees
/// (U+202E shows "gpj.exe" as "exe.jpg"), so names refuse them and logs escape them.
pub fn is_bidi_control(c: char) -> bool {
    matches!(
        c,
        '\u{061C}' | '\u{200E}' | '\u{200F}' | '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}'
    )
}

/// Characters that take no space and show nothing (zero-width spaces and joiners, word joiner,
/// byte-order mark, soft hyphen and the like): a name made only of these looks empty.
pub fn is_invisible(c: char) -> bool {
    c.is_whitespace()
        || c.is_control()
        || is_bidi_control(c)
        || matches!(
            c,
            '\u{00AD}'
                | '\u{034F}'
                | '\u{115F}'
                | '\u{1160}'
                | '\u{17B4}'
                | '\u{17B5}'
                | '\u{180B}'..='\u{180F}'
                | '\u{200B}'..='\u{200D}'
                | '\u{2060}'..='\u{2064}'
                | '\u{206A}'..='\u{206F}'
                | '\u{3164}'
                | '\u{FE00}'..='\u{FE0F}'
                | '\u{FEFF}'
                | '\u{FFA0}'
                | '\u{E0000}'..='\u{E007F}'
        )
}

/// True when `text` shows at least one character.
pub fn has_visible(text: &str) -> bool {
    text.chars().any(|c| !is_invisible(c))
}

/// Caller text as a log field shows it: control characters (C0, DEL, C1: `\n`, `\r`, ESC…), line
/// and paragraph separators, bidi controls and invisible characters escaped as `\u{…}` (`\` as
/// `\\`, so an escape cannot be faked), and at most [`MAX_LOGGED_CHARS`] characters, with a
/// marker giving the full length when cut. One value can then never end a line, colour a
/// terminal, reorder what a reader sees or fill the log.
#[derive(Clone, Copy)]
pub struct LogSafe<'a>(pub &'a str);

impl fmt::Display for LogSafe<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&LogSafeUpTo(self.0, MAX_LOGGED_CHARS), f)
    }
}

/// As [`LogSafe`], showing up to the given number of characters (for text that is longer by
/// nature, such as a panic's message).
#[derive(Clone, Copy)]
pub struct LogSafeUpTo<'a>(pub &'a str, pub usize);

impl fmt::Display for LogSafeUpTo<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (shown, (at, c)) in self.0.char_indices().enumerate() {
            if shown == self.1 {
                let rest = self.0.len() - at;
                return write!(f, "…[cut: {} bytes in all, {rest} not shown]", self.0.len());
            }
            match c {
                '\\' => f.write_str("\\\\")?,
                '\n' => f.write_str("\\n")?,
                '\r' => f.write_str("\\r")?,
                '\t' => f.write_str("\\t")?,
                ' ' => f.write_str(" ")?,
                c if is_invisible(c) || matches!(c, '\u{2028}' | '\u{2029}') => {
                    write!(f, "\\u{{{:04x}}}", u32::from(c))?;
                }
                c => fmt::Write::write_char(f, c)?,
            }
        }
        Ok(())
    }
}

impl fmt::Debug for LogSafe<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "\"{self}\"")
    }
}

/// Text that should be an ODS code, as a log field shows it: the code when it is one, else
/// `invalid (N bytes)` — never the text, which may be anything, including personal data.
#[derive(Clone, Copy)]
pub struct LogOds<'a>(pub &'a str);

impl fmt::Display for LogOds<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match OdsCode::parse(self.0) {
            Ok(code) => f.write_str(code.as_str()),
            Err(_) => write!(f, "invalid ({} bytes)", self.0.len()),
        }
    }
}

impl fmt::Debug for LogOds<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn line_breaks_escapes_and_bidi_controls_are_escaped() {
        let forged = "A\n{\"level\":\"ERROR\"}\r\u{1b}[31mred\u{202e}\u{85}\\n";
        assert_eq!(
            LogSafe(forged).to_string(),
            "A\\n{\"level\":\"ERROR\"}\\r\\u{001b}[31mred\\u{202e}\\u{0085}\\\\n"
        );
    }

    #[test]
    fn long_values_are_cut_with_their_length() {
        let long = "x".repeat(3 * 1024 * 1024);
        let shown = LogSafe(&long).to_string();
        assert!(shown.starts_with(&"x".repeat(MAX_LOGGED_CHARS)));
        assert!(shown.ends_with("…[cut: 3145728 bytes in all, 3145664 not shown]"));
        assert!(shown.len() < 128);
        assert_eq!(LogSafe(&long[..MAX_LOGGED_CHARS]).to_string().len(), 64);
    }

    #[test]
    fn an_ods_code_shows_only_when_valid() {
        assert_eq!(LogOds("X26").to_string(), "X26");
        assert_eq!(LogOds("X26\nforged").to_string(), "invalid (10 bytes)");
        assert_eq!(LogOds("").to_string(), "invalid (0 bytes)");
    }

    #[test]
    fn visible_means_something_shows() {
        assert!(has_visible("Ann"));
        assert!(has_visible("\u{200b}A"));
        for empty in [
            "",
            " \t",
            "\u{200b}\u{200c}\u{200d}\u{2060}\u{feff}",
            "\u{3000}",
        ] {
            assert!(!has_visible(empty), "{empty:?}");
        }
    }

    proptest! {
        /// Whatever the text, the shown value is one line of printable characters, bounded.
        #[test]
        fn any_text_logs_as_one_bounded_line(text in any::<String>()) {
            let shown = LogSafe(&text).to_string();
            let breaks = |c: char| {
                c.is_control() || is_bidi_control(c) || matches!(c, '\u{2028}' | '\u{2029}')
            };
            prop_assert!(!shown.chars().any(breaks), "{:?}", shown);
            // 64 characters of at most 10 ("\u{10ffff}") each, and the marker.
            prop_assert!(shown.chars().count() <= MAX_LOGGED_CHARS * 10 + 64);
        }
    }
}
