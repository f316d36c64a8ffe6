//! Valid NHS numbers from the test range (999 000 0000 – 999 999 9999: valid checksums, never
//! issued), for fixtures and load.

/// Every valid test-range NHS number, in order (999 000 0018, 999 000 0026, ...).
pub fn nhs_numbers() -> impl Iterator<Item = String> {
    cpis_core::nhs_number::test_range().map(|n| n.to_string())
}

/// The `i`-th valid test-range NHS number.
pub fn nhs(i: usize) -> String {
    nhs_numbers()
        .nth(i)
        .expect("the test range holds enough numbers")
}
