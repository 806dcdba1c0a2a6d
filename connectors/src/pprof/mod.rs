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

/// What a profile measures, read from its sample types. Go's heap and
/// allocs profiles carry the same sample types (so do mutex and block):
/// each pair is one family, and a diff or a baseline within a family is
/// sound.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Family {
    /// `samples/count`, `cpu/nanoseconds`.
    Cpu,
    /// `alloc_objects`, `alloc_space`, `inuse_objects`, `inuse_space`:
    /// heap or allocs.
    Memory,
    /// `goroutine/count`.
    Goroutine,
    /// `contentions/count`, `delay/nanoseconds`: mutex or block.
    Contention,
    /// `threadcreate/count`.
    Threadcreate,
}

impl Family {
    /// The family of a profile kind as quench names them (`cpu`, `heap`,
    /// `allocs`, `goroutine`, `mutex`, `block`, `threadcreate`).
    pub fn of_kind(kind: &str) -> Option<Family> {
        Some(match kind {
            "cpu" => Family::Cpu,
            "heap" | "allocs" => Family::Memory,
            "goroutine" => Family::Goroutine,
            "mutex" | "block" => Family::Contention,
            "threadcreate" => Family::Threadcreate,
            _ => return None,
        })
    }

    /// The family a decoded profile belongs to, from its sample types.
    pub fn of(p: &proto::Profile) -> Option<Family> {
        let name = |i: i64| {
            usize::try_from(i)
                .ok()
                .and_then(|i| p.string_table.get(i))
                .map(String::as_str)
                .unwrap_or("")
        };
        let types: Vec<&str> = p.sample_type.iter().map(|t| name(t.r#type)).collect();
        let has = |t: &str| types.contains(&t);
        Some(if has("cpu") {
            Family::Cpu
        } else if has("inuse_space") || has("alloc_space") {
            Family::Memory
        } else if has("goroutine") {
            Family::Goroutine
        } else if has("contentions") || has("delay") {
            Family::Contention
        } else if has("threadcreate") {
            Family::Threadcreate
        } else {
            return None;
        })
    }

    /// In words, for messages.
    pub fn describe(self) -> &'static str {
        match self {
            Family::Cpu => "a CPU profile",
            Family::Memory => "a heap/allocs profile",
            Family::Goroutine => "a goroutine profile",
            Family::Contention => "a mutex/block profile",
            Family::Threadcreate => "a threadcreate profile",
        }
    }
}

/// The most a profile may take once decompressed (a gzip bomb stops here),
/// plain protobuf included. Decoding can grow it up to eight times (a
/// packed varint of one byte becomes a 64-bit value), so this bounds a
/// decoded profile near 256 MiB; Go's own profiles are a few MiB.
pub const MAX_DECOMPRESSED: usize = 32 << 20;

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
    } else if bytes.len() > MAX_DECOMPRESSED {
        return Err(ProfileError::TooLarge(MAX_DECOMPRESSED));
    } else {
        bytes.to_vec()
    };
    proto::Profile::decode(raw.as_slice()).map_err(ProfileError::Decode)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_bodies_get_clear_errors() {
        // A truncated gzip stream.
        let mut gz = Vec::new();
        {
            use std::io::Write;
            let mut e = flate2::write::GzEncoder::new(&mut gz, flate2::Compression::default());
            e.write_all(&[0x0a, 0x04, 0x08, 0x01, 0x10, 0x02].repeat(100))
                .unwrap();
            e.finish().unwrap();
        }
        let err = decode(&gz[..gz.len() / 2]).unwrap_err();
        assert!(matches!(err, ProfileError::Gzip(_)), "{err}");
        // An HTML error page is not a profile.
        let err = decode(b"<html><body>502 Bad Gateway</body></html>").unwrap_err();
        assert!(matches!(err, ProfileError::Decode(_)), "{err}");
        assert!(err.to_string().starts_with("profile does not decode"));
    }

    proptest::proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..2048)) {
            if let Ok(p) = decode(&bytes) {
                for i in 0..p.sample_type.len().max(1) {
                    let _ = top::top(&p, i);
                    let _ = flame::folded(&p, i);
                }
            }
        }

        #[test]
        fn arbitrary_gzip_payloads_never_panic(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..512)) {
            use std::io::Write;
            let mut gz = Vec::new();
            let mut e = flate2::write::GzEncoder::new(&mut gz, flate2::Compression::fast());
            e.write_all(&bytes).unwrap();
            e.finish().unwrap();
            if let Ok(p) = decode(&gz) {
                let _ = top::top(&p, 0);
            }
        }
    }

    /// A profile larger than the bound once decompressed, gzip'd or plain,
    /// is refused before it is decoded.
    #[test]
    fn oversized_profiles_are_refused_before_decoding() {
        let plain = vec![0u8; MAX_DECOMPRESSED + 1];
        assert!(matches!(decode(&plain), Err(ProfileError::TooLarge(_))));
        let mut gz = Vec::new();
        {
            use std::io::Write;
            let mut e = flate2::write::GzEncoder::new(&mut gz, flate2::Compression::fast());
            e.write_all(&plain).unwrap();
            e.finish().unwrap();
        }
        assert!(gz.len() < 1 << 20, "a bomb: small in, large out");
        assert!(matches!(decode(&gz), Err(ProfileError::TooLarge(_))));
    }
}
