//! The kernel names of a .cu file, read by both build scripts (build.rs for the typed kernel ids, emu/build.rs
//! for the emulated device's launch table), so that the two agree on what a kernel is.

/// The names of the `extern "C" __global__ void NAME(` kernels in a .cu file, in order.
pub fn kernel_names(text: &str) -> Vec<String> {
    let key = "extern \"C\" __global__ void ";
    text.match_indices(key)
        .map(|(i, _)| {
            let rest = &text[i + key.len()..];
            let end = rest.find(|c: char| !(c.is_ascii_alphanumeric() || c == '_')).unwrap_or(rest.len());
            rest[..end].to_string()
        })
        .collect()
}
