//! A publisher's checkpoint as another build left it.

/// `bytes`, a checkpoint saved by this build, as another version of sonde in the same
/// layout would have saved it: the version in its header changed (each digit a 9, so its
/// length and the header's encoding stay), nothing else. Returns it and that version.
pub fn as_saved_by_another_version(bytes: &[u8]) -> (Vec<u8>, String) {
    let this = env!("CARGO_PKG_VERSION");
    let other: String = this
        .chars()
        .map(|c| if c.is_ascii_digit() { '9' } else { c })
        .collect();
    assert_ne!(this, other, "this build is already the other version");
    let at = bytes
        .windows(this.len())
        .position(|w| w == this.as_bytes())
        .expect("the header names the version");
    let mut patched = bytes.to_vec();
    patched[at..at + this.len()].copy_from_slice(other.as_bytes());
    (patched, other)
}

/// `bytes`, a checkpoint saved by this build, as a build whose layout of the part at `at`
/// (in `History::parts` order) is another would have saved it: that part's layout number
/// raised in the header, and the part's bytes garbage, so that decoding it instead of
/// leaving it fails.
pub fn with_a_part_in_another_layout(bytes: &[u8], at: usize) -> Vec<u8> {
    with_a_part_replaced(bytes, at, 1, vec![0xff; 64])
}

/// `bytes`, a checkpoint saved by this build, with the part at `at` (in `History::parts`
/// order) replaced by `part`, in the same layout: a part damaged in the store.
pub fn with_a_part_damaged(bytes: &[u8], at: usize, part: Vec<u8>) -> Vec<u8> {
    with_a_part_replaced(bytes, at, 0, part)
}

/// `bytes`, a checkpoint saved by this build, as a build before its last part (the
/// incidents) was added would have saved it: the first four parts and their layouts.
pub fn without_the_last_part(bytes: &[u8]) -> Vec<u8> {
    edited(bytes, |layouts, parts| {
        layouts.truncate(4);
        parts.truncate(4);
    })
}

/// `bytes` with the part at `at` replaced by `part` and its layout number raised by
/// `raised`.
fn with_a_part_replaced(bytes: &[u8], at: usize, raised: u32, part: Vec<u8>) -> Vec<u8> {
    edited(bytes, |layouts, parts| {
        layouts[at] += raised;
        parts[at] = serde_bytes::ByteBuf::from(part);
    })
}

/// `bytes` with the parts' layouts in the header and the parts themselves as `edit` leaves
/// them.
fn edited(
    bytes: &[u8],
    edit: impl FnOnce(&mut Vec<u32>, &mut Vec<serde_bytes::ByteBuf>),
) -> Vec<u8> {
    // The header (layout, version, time, each part's layout), then the parts.
    let mut reader = rmp_serde::Deserializer::new(bytes);
    let (format, sonde, at_ms, mut layouts): (u32, String, i64, Vec<u32>) =
        serde::Deserialize::deserialize(&mut reader).expect("a header");
    let mut parts: Vec<serde_bytes::ByteBuf> =
        serde::Deserialize::deserialize(&mut reader).expect("the parts");
    assert_eq!((layouts.len(), parts.len()), (5, 5));
    edit(&mut layouts, &mut parts);
    let mut changed = rmp_serde::to_vec(&(format, sonde, at_ms, layouts)).expect("encodes");
    rmp_serde::encode::write(&mut changed, &parts).expect("encodes");
    changed
}
