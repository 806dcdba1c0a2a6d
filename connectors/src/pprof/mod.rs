//! Go profiles: the profile.proto decoder and the analyses an on-call
//! engineer reads in ten seconds.
//!
//! - [`proto`]: hand-written prost messages for `profile.proto` (no protoc);
//!   prost reads fields in whatever order they come, as Go writes them.
//! - [`top`]: the `go tool pprof -top` table (flat, flat%, sum%, cum, cum%).
//! - [`flame`]: folded stacks, SVG flame graphs, diffs against a baseline.

pub mod flame;
pub mod proto;
pub mod top;

use std::io::Read;

/// A profile that cannot be read.
#[derive(Debug, thiserror::Error)]
pub enum ProfileError {
    /// The gzip layer is broken.
    #[error("profile is not valid gzip: {0}")]
    Gzip(#[source] std::io::Error),
    /// The protobuf does not decode.
    #[error("profile does not decode: {0}")]
    Decode(#[source] prost::DecodeError),
    /// It decodes, but refers to things it does not hold.
    #[error("profile is inconsistent: {0}")]
    Inconsistent(String),
    /// Bigger than allowed once decompressed.
    #[error("profile is larger than {0} bytes once decompressed")]
    TooLarge(usize),
}

/// The most a profile may take once decompressed (a gzip bomb stops here).
pub const MAX_DECOMPRESSED: usize = 256 << 20;

/// Decodes a profile as Go serves it: gzip-compressed protobuf (plain
/// protobuf is accepted too).
pub fn decode(bytes: &[u8]) -> Result<proto::Profile, ProfileError> {
    use prost::Message;
    let raw = if bytes.starts_with(&[0x1f, 0x8b]) {
        let mut out = Vec::new();
        flate2::read::GzDecoder::new(bytes)
            .take(MAX_DECOMPRESSED as u64 + 1)
            .read_to_end(&mut out)
            .map_err(ProfileError::Gzip)?;
        if out.len() > MAX_DECOMPRESSED {
            return Err(ProfileError::TooLarge(MAX_DECOMPRESSED));
        }
        out
    } else {
        bytes.to_vec()
    };
    proto::Profile::decode(raw.as_slice()).map_err(ProfileError::Decode)
}
