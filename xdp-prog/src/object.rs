//! The compiled XDP object, embedded in the binary.

/// Gives the embedded bytes 8-byte alignment: the ELF parser reads 64-bit
/// fields in place and rejects a misaligned buffer.
#[repr(C, align(8))]
struct Aligned<B: ?Sized> {
    bytes: B,
}

static ALIGNED: &Aligned<[u8]> = &Aligned { bytes: *include_bytes!(env!("XSBC_BPF_OBJECT")) };

/// The ELF object of the XDP program, 8-byte aligned, ready for
/// `aya::Ebpf::load` (or use [`crate::load`]).
pub static XDP_OBJECT: &[u8] = &ALIGNED.bytes;

/// Where [`XDP_OBJECT`] came from: `"clang"` (built from `src/xsbc.bpf.c`
/// by this build) or `"checked-in"` (`bpf/xsbc.bpf.o`, no clang here).
pub const XDP_OBJECT_ORIGIN: &str = env!("XSBC_BPF_OBJECT_ORIGIN");

#[cfg(test)]
mod tests {
    use aya_obj::generated::bpf_map_type::{
        BPF_MAP_TYPE_HASH, BPF_MAP_TYPE_LPM_TRIE, BPF_MAP_TYPE_PERCPU_ARRAY, BPF_MAP_TYPE_XSKMAP,
    };
    use std::fmt::Write as _;

    use sha2::{Digest, Sha256};

    use super::*;
    use crate::{
        BanKey, BanValue, MediaKey, MediaValue, PortRange, COUNTER_COUNT, MAP_BANS, MAP_COUNTERS, MAP_MEDIA_PORTS,
        MAP_NAMES, MAP_RELAY_PORTS, MAP_SIP_PORTS, MAP_XSKS, PROGRAM_NAME,
    };

    fn sha256_hex(bytes: &[u8]) -> String {
        Sha256::digest(bytes).iter().fold(String::new(), |mut hex, b| {
            let _ = write!(hex, "{b:02x}");
            hex
        })
    }

    /// Fails when `src/xsbc.bpf.c` changed but `bpf/xsbc.bpf.o` was not
    /// rebuilt (or the object was replaced without recording it).
    #[test]
    fn checked_in_object_was_built_from_this_source() {
        let want = format!(
            "{}  src/xsbc.bpf.c\n{}  bpf/xsbc.bpf.o\n",
            sha256_hex(include_bytes!("xsbc.bpf.c")),
            sha256_hex(include_bytes!("../bpf/xsbc.bpf.o")),
        );
        assert_eq!(
            include_str!("../bpf/xsbc.bpf.sha256"),
            want,
            "bpf/xsbc.bpf.o is stale: run `XSBC_BPF_REFRESH=1 cargo build -p xdp-prog` \
             (needs clang and libbpf-dev) and commit xdp-prog/bpf/"
        );
    }

    /// The object's map definitions (from its BTF) agree with the Rust side.
    #[test]
    fn maps_match_the_rust_types() {
        let obj = aya_obj::Object::parse(XDP_OBJECT).expect("the embedded object parses");
        assert!(obj.programs.contains_key(PROGRAM_NAME), "programs: {:?}", obj.programs.keys());
        let mut names: Vec<&str> = obj.maps.keys().map(String::as_str).collect();
        names.sort_unstable();
        let mut want = MAP_NAMES.to_vec();
        want.sort_unstable();
        assert_eq!(names, want);

        let size = |n: usize| u32::try_from(n).unwrap();
        let table = [
            (MAP_XSKS, BPF_MAP_TYPE_XSKMAP, 4, 4),
            (MAP_MEDIA_PORTS, BPF_MAP_TYPE_HASH, size_of::<MediaKey>(), size_of::<MediaValue>()),
            (MAP_BANS, BPF_MAP_TYPE_LPM_TRIE, size_of::<BanKey>(), size_of::<BanValue>()),
            (MAP_SIP_PORTS, BPF_MAP_TYPE_HASH, size_of::<u16>(), size_of::<u32>()),
            (MAP_COUNTERS, BPF_MAP_TYPE_PERCPU_ARRAY, size_of::<u32>(), size_of::<u64>()),
            (MAP_RELAY_PORTS, BPF_MAP_TYPE_HASH, 16, size_of::<PortRange>()),
        ];
        for (name, map_type, key, value) in table {
            let map = &obj.maps[name];
            assert_eq!(map.map_type(), map_type as u32, "{name} type");
            assert_eq!((map.key_size(), map.value_size()), (size(key), size(value)), "{name} key/value size");
        }
        assert_eq!(obj.maps[MAP_COUNTERS].max_entries(), size(COUNTER_COUNT));
        assert_eq!(obj.maps[MAP_BANS].max_entries(), crate::BANS_MAX_ENTRIES);
        assert_eq!(obj.maps[MAP_RELAY_PORTS].max_entries(), crate::RELAY_PORTS_MAX_ENTRIES);
    }

    #[test]
    fn object_is_an_aligned_bpf_elf() {
        const EM_BPF: u16 = 247;
        assert_eq!(XDP_OBJECT.as_ptr() as usize % 8, 0);
        assert_eq!(&XDP_OBJECT[..4], b"\x7fELF");
        assert_eq!(u16::from_le_bytes([XDP_OBJECT[18], XDP_OBJECT[19]]), EM_BPF);
        assert!(["clang", "checked-in"].contains(&XDP_OBJECT_ORIGIN));
    }

    /// `scripts/test.sh` builds and tests this crate a second time with no
    /// usable clang and `XSBC_EXPECT_BPF_ORIGIN=checked-in`: the build
    /// must succeed and embed the checked-in object, and the other tests
    /// (the verdict table among them) then run against that object.
    #[test]
    fn object_comes_from_where_the_build_was_told() {
        match std::env::var("XSBC_EXPECT_BPF_ORIGIN") {
            Ok(want) => assert_eq!(XDP_OBJECT_ORIGIN, want),
            Err(_) => eprintln!("XSBC_EXPECT_BPF_ORIGIN unset: the object came from {XDP_OBJECT_ORIGIN}"),
        }
    }
}
