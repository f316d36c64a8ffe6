//! The caller's deadline, as gRPC carries it in the `grpc-timeout` header ("<digits><unit>",
//! unit H, M, S, m, u or n), so a service can propagate it downstream and stop work that can no
//! longer be answered in time.

use std::time::Duration;

use tonic::metadata::MetadataMap;

/// The time the caller allows for this call, if it set a deadline.
pub fn remaining(metadata: &MetadataMap) -> Option<Duration> {
    let value = metadata.get("grpc-timeout")?.to_str().ok()?;
    parse_timeout(value)
}

/// Parses a `grpc-timeout` value (at most 8 digits and a unit).
pub fn parse_timeout(value: &str) -> Option<Duration> {
    if value.len() < 2 || value.len() > 9 {
        return None;
    }
    let (digits, unit) = value.split_at(value.len() - 1);
    let amount: u64 = digits.parse().ok()?;
    Some(match unit {
        "H" => Duration::from_secs(amount.checked_mul(3600)?),
        "M" => Duration::from_secs(amount.checked_mul(60)?),
        "S" => Duration::from_secs(amount),
        "m" => Duration::from_millis(amount),
        "u" => Duration::from_micros(amount),
        "n" => Duration::from_nanos(amount),
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_unit() {
        assert_eq!(parse_timeout("2S"), Some(Duration::from_secs(2)));
        assert_eq!(parse_timeout("1500m"), Some(Duration::from_millis(1500)));
        assert_eq!(parse_timeout("7u"), Some(Duration::from_micros(7)));
        assert_eq!(parse_timeout("9n"), Some(Duration::from_nanos(9)));
        assert_eq!(parse_timeout("1M"), Some(Duration::from_secs(60)));
        assert_eq!(parse_timeout("1H"), Some(Duration::from_secs(3600)));
        assert_eq!(parse_timeout("123456789S"), None);
        assert_eq!(parse_timeout("5x"), None);
        assert_eq!(parse_timeout("S"), None);
    }
}
