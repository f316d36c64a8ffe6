//! The NHS number: 10 digits whose 10th is a Modulus 11 check digit (weights 10..2 over digits
//! 1..9; check = 11 - (sum mod 11); 11 means 0; 10 means the number can never be valid).

use std::fmt;

use cpis_proto::cpis::common::v1::ErrorReason;

use crate::status::FieldViolation;

/// A syntactically valid NHS number. Its `Debug` output is redacted so it cannot leak into logs
/// by accident; `Display` (for storage and the wire) prints the 10 digits.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct NhsNumber([u8; 10]);

/// Why a string is not an NHS number.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum NhsNumberError {
    /// Not exactly 10 ASCII digits (spaces are not accepted on the wire).
    #[error("must be exactly 10 digits with no spaces")]
    Format,
    /// The Modulus 11 check digit does not match, or the check value is 10.
    #[error("Modulus 11 check digit is not valid")]
    CheckDigit,
    /// Passes the checksum but cannot be a real number (all one digit, such as 0000000000, or a
    /// Scottish CHI-range number whose DDMMYY prefix is not a date).
    #[error("is not a plausible NHS number")]
    Implausible,
}

impl NhsNumber {
    /// Validates a 10-digit string.
    pub fn parse(input: &str) -> Result<Self, NhsNumberError> {
        let bytes = input.as_bytes();
        if bytes.len() != 10 || !bytes.iter().all(u8::is_ascii_digit) {
            return Err(NhsNumberError::Format);
        }
        let mut digits = [0u8; 10];
        for (slot, byte) in digits.iter_mut().zip(bytes) {
            *slot = byte - b'0';
        }
        let expected = check_digit(&digits).ok_or(NhsNumberError::CheckDigit)?;
        if digits[9] != expected {
            return Err(NhsNumberError::CheckDigit);
        }
        if digits.iter().all(|d| *d == digits[0]) || !plausible_chi(&digits) {
            return Err(NhsNumberError::Implausible);
        }
        Ok(Self(digits))
    }

    /// True for the test range 999 000 0000 – 999 999 9999 (valid checksums, never issued).
    pub fn is_test_range(&self) -> bool {
        self.0[..3] == [9, 9, 9]
    }

    /// Validates the request field `field`: the one set of texts both services answer with.
    pub fn parse_field(value: &str, field: &str) -> Result<Self, FieldViolation> {
        Self::parse(value)
            .map_err(|e| FieldViolation::new(field, ErrorReason::NhsNumberInvalid, e.to_string()))
    }
}

/// Numbers 010 000 0000 – 311 299 9999 are Scottish CHI numbers, whose first six digits are the
/// date of birth as DDMMYY: one whose prefix is not a calendar date can never have been issued.
/// (YY 00-68 are read as 20YY and 69-99 as 19YY, so February has 29 days when YY is a multiple
/// of 4.)
fn plausible_chi(digits: &[u8; 10]) -> bool {
    let value = digits.iter().fold(0u64, |n, d| n * 10 + u64::from(*d));
    if !(100_000_000..=3_112_999_999).contains(&value) {
        return true;
    }
    let pair = |i: usize| digits[i] * 10 + digits[i + 1];
    let (day, month, year) = (pair(0), pair(2), pair(4));
    let days_in_month = match month {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        2 if year % 4 == 0 => 29,
        2 => 28,
        _ => return false,
    };
    (1..=days_in_month).contains(&day)
}

/// The Modulus 11 check digit of the first nine digits; `None` when it would be 10.
pub fn check_digit(digits: &[u8; 10]) -> Option<u8> {
    let sum: u32 = digits[..9]
        .iter()
        .zip((2..=10u32).rev())
        .map(|(d, w)| u32::from(*d) * w)
        .sum();
    match 11 - (sum % 11) {
        11 => Some(0),
        10 => None,
        // 1..=9 always fits in a u8.
        check => u8::try_from(check).ok(),
    }
}

/// Every valid NHS number of the test range 999 000 0000 – 999 999 9999 (valid checksums,
/// never issued), in order: 999 000 0018, 999 000 0026, ... For fixtures, demo data and load.
pub fn test_range() -> impl Iterator<Item = NhsNumber> {
    (0..1_000_000u32).filter_map(|n| {
        let mut digits = [9, 9, 9, 0, 0, 0, 0, 0, 0, 0];
        let mut rest = n;
        for slot in digits[3..9].iter_mut().rev() {
            // rest % 10 is always a single digit.
            *slot = u8::try_from(rest % 10).unwrap_or(0);
            rest /= 10;
        }
        digits[9] = check_digit(&digits)?;
        // Drops 999 999 9999 (all one digit), as `parse` does.
        let number = NhsNumber(digits);
        (!digits.iter().all(|d| *d == 9)).then_some(number)
    })
}

impl fmt::Display for NhsNumber {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for d in self.0 {
            write!(f, "{d}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for NhsNumber {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never print the number itself: Debug output ends up in logs and panics.
        f.write_str("NhsNumber(<redacted>)")
    }
}

impl std::str::FromStr for NhsNumber {
    type Err = NhsNumberError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_range_yields_only_valid_test_numbers_in_order() {
        let first: Vec<String> = test_range().take(3).map(|n| n.to_string()).collect();
        assert_eq!(first, ["9990000018", "9990000026", "9990000034"]);
        let mut previous = 0u64;
        for number in test_range().step_by(997) {
            let text = number.to_string();
            assert_eq!(NhsNumber::parse(&text), Ok(number));
            assert!(number.is_test_range());
            let value: u64 = text.parse().unwrap_or_default();
            assert!(value > previous);
            previous = value;
        }
        assert_eq!(test_range().last().map(|n| n.is_test_range()), Some(true));
        assert!(!test_range().any(|n| n.to_string() == "9999999999"));
    }

    #[test]
    fn domain_fixtures() {
        for valid in ["9990000018", "9990000026", "9990000034", "9434765919"] {
            assert!(NhsNumber::parse(valid).is_ok(), "{valid}");
        }
        assert_eq!(
            NhsNumber::parse("9991234560"),
            Err(NhsNumberError::CheckDigit)
        );
    }

    #[test]
    fn format_boundaries() {
        for bad in [
            "",
            "999000001",
            "99900000188",
            "999 000 0018",
            "999000001a",
            "９９９0000018",
        ] {
            assert_eq!(
                NhsNumber::parse(bad),
                Err(NhsNumberError::Format),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn check_value_ten_is_never_valid() {
        // Digit 9 (weight 2) = 6 and the rest 0: sum 12, 12 mod 11 = 1, 11 - 1 = 10.
        assert_eq!(check_digit(&[0, 0, 0, 0, 0, 0, 0, 0, 6, 0]), None);
        for last in 0..=9 {
            let candidate = format!("000000006{last}");
            assert_eq!(
                NhsNumber::parse(&candidate),
                Err(NhsNumberError::CheckDigit),
                "{candidate}"
            );
        }
    }

    #[test]
    fn repeated_digits_are_implausible() {
        assert_eq!(
            NhsNumber::parse("0000000000"),
            Err(NhsNumberError::Implausible)
        );
        assert_eq!(
            NhsNumber::parse("1111111111"),
            Err(NhsNumberError::Implausible)
        );
    }

    #[test]
    fn chi_range_needs_a_date_prefix() {
        // 0637172558 passes Modulus 11 but 06/37/17 is not a date.
        assert_eq!(
            NhsNumber::parse("0637172558"),
            Err(NhsNumberError::Implausible)
        );
        // 29 February exists in YY = 04, not in YY = 05.
        let with_check = |body: &str| {
            let mut digits = [0u8; 10];
            for (slot, b) in digits.iter_mut().zip(body.bytes()) {
                *slot = b - b'0';
            }
            check_digit(&digits).map(|c| format!("{body}{c}"))
        };
        let leap = (0..1000)
            .find_map(|n| with_check(&format!("290204{n:03}")))
            .unwrap_or_default();
        assert!(NhsNumber::parse(&leap).is_ok(), "{leap}");
        let not_leap = (0..1000)
            .find_map(|n| with_check(&format!("290205{n:03}")))
            .unwrap_or_default();
        assert_eq!(
            NhsNumber::parse(&not_leap),
            Err(NhsNumberError::Implausible),
            "{not_leap}"
        );
    }

    #[test]
    fn debug_is_redacted() {
        let n = NhsNumber::parse("9990000018").unwrap_or_else(|e| panic!("{e}"));
        assert!(!format!("{n:?}").contains("999"));
        assert_eq!(n.to_string(), "9990000018");
        assert!(n.is_test_range());
    }
}

#[cfg(test)]
mod properties {
    use proptest::prelude::*;

    use super::*;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(1000))]

        /// Any text, never a panic; an accepted number is 10 ASCII digits that print back as
        /// given, and the field violation names the field it was given.
        #[test]
        fn any_text_parses_or_is_refused(text in prop_oneof!["(?s).{0,16}", "[0-9 ]{8,14}"]) {
            match NhsNumber::parse(&text) {
                Ok(n) => {
                    let printed = n.to_string();
                    prop_assert!(printed.len() == 10 && printed.bytes().all(|b| b.is_ascii_digit()));
                    prop_assert_eq!(printed, text);
                }
                Err(_) => {
                    let v = NhsNumber::parse_field(&text, "x.nhs_number").err();
                    prop_assert_eq!(v.map(|v| v.field), Some("x.nhs_number".to_owned()));
                }
            }
        }
    }
}
