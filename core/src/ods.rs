//! The ODS code: the NHS Organisation Data Service identifier of a council or a care
//! organisation. Validated once here; both services use this type and its rule text.

use std::fmt;

/// A valid ODS code: 3 to 10 upper-case ASCII letters and digits.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct OdsCode(String);

/// The rule, as callers read it in violations.
pub const ODS_CODE_RULE: &str = "must be an ODS code (3 to 10 upper-case letters and digits)";

/// Why a string is not an ODS code.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{ODS_CODE_RULE}")]
pub struct OdsCodeError;

impl OdsCode {
    /// Validates `value` as it arrives (no trimming, no case folding: a code is sent exactly).
    pub fn parse(value: &str) -> Result<Self, OdsCodeError> {
        let ok = (3..=10).contains(&value.len())
            && value
                .bytes()
                .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit());
        if ok {
            Ok(Self(value.to_owned()))
        } else {
            Err(OdsCodeError)
        }
    }

    /// The code as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for OdsCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for OdsCode {
    // An organisation's code is not personal data: showing it keeps logs and asserts useful.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "OdsCode({})", self.0)
    }
}

impl std::str::FromStr for OdsCode {
    type Err = OdsCodeError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

impl AsRef<str> for OdsCode {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn boundaries() {
        for good in ["AB1", "RXX01", "ABCDEFGHIJ", "999"] {
            assert!(OdsCode::parse(good).is_ok(), "{good}");
        }
        for bad in [
            "",
            "AB",
            "ABCDEFGHIJK",
            "rxx01",
            "RX X1",
            "RXX-1",
            "ＲＸＸ01",
            "RXX01\n",
        ] {
            assert_eq!(OdsCode::parse(bad), Err(OdsCodeError), "{bad:?}");
        }
    }
}

#[cfg(test)]
mod properties {
    use proptest::prelude::*;

    use super::*;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(1000))]

        /// Any text, never a panic; an accepted code is 3 to 10 upper-case letters and digits.
        #[test]
        fn any_text_parses_or_is_refused(text in prop_oneof!["(?s).{0,12}", "[A-Z0-9a-z]{2,11}"]) {
            if let Ok(code) = OdsCode::parse(&text) {
                let s = code.as_str();
                prop_assert!((3..=10).contains(&s.len()));
                prop_assert!(s.bytes().all(|b| b.is_ascii_uppercase() || b.is_ascii_digit()));
            }
        }
    }
}
