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
