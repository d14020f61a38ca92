//! Cutting a fuzz input into pieces, shared by the targets that check that where input
//! is cut makes no difference.

/// `input` cut into pieces whose lengths are `cuts` (each octet plus one), cycled; one
/// piece when `cuts` is empty.
pub fn pieces<'a>(input: &'a [u8], cuts: &'a [u8]) -> impl Iterator<Item = &'a [u8]> + 'a {
    let mut at = 0;
    let mut k = 0;
    std::iter::from_fn(move || {
        if at >= input.len() {
            return None;
        }
        let len = cuts
            .get(k % cuts.len().max(1))
            .map_or(input.len(), |&c| usize::from(c) + 1)
            .min(input.len() - at);
        k += 1;
        let piece = &input[at..at + len];
        at += len;
        Some(piece)
    })
}
