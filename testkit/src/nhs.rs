//! Valid NHS numbers from the test range (999 000 0000 – 999 999 9999: valid checksums, never
//! issued), for fixtures and load.

/// Every valid test-range NHS number, in order (999 000 0018, 999 000 0026, ...).
pub fn nhs_numbers() -> impl Iterator<Item = String> {
    (0..1_000_000u32).filter_map(|n| {
        let body = format!("999{n:06}");
        let sum: u32 = body
            .bytes()
            .zip((2..=10u32).rev())
            .map(|(b, w)| u32::from(b - b'0') * w)
            .sum();
        match 11 - (sum % 11) {
            10 => None,
            11 => Some(format!("{body}0")),
            check => Some(format!("{body}{check}")).filter(|n| n != "9999999999"),
        }
    })
}

/// The `i`-th valid test-range NHS number.
pub fn nhs(i: usize) -> String {
    nhs_numbers()
        .nth(i)
        .expect("the test range holds enough numbers")
}
