//! The partition token of a row: Cassandra's Murmur3Partitioner, as ScyllaDB uses it.
//!
//! The token decides which replica and which shard own a row, so it must match the
//! server's bit for bit. It is MurmurHash3 x64 128-bit with seed 0, keeping the first
//! 64-bit half, with two Cassandra quirks kept on purpose: tail bytes are sign-extended
//! (Java bytes are signed), and `i64::MIN` is mapped to `i64::MAX` (the minimum token is
//! reserved). The test vectors are the ones every Cassandra driver checks against.

const C1: u64 = 0x87c3_7b91_1142_53d5;
const C2: u64 = 0x4cf5_ad43_2745_937f;

/// The token of a single-column partition key whose serialized value is `key` (for a
/// `text` column, its UTF-8 bytes).
pub fn murmur3_token(key: &[u8]) -> i64 {
    let mut h1: u64 = 0;
    let mut h2: u64 = 0;
    let mut blocks = key.chunks_exact(16);
    for block in &mut blocks {
        let k1 = u64::from_le_bytes(block[..8].try_into().unwrap());
        let k2 = u64::from_le_bytes(block[8..].try_into().unwrap());
        h1 ^= mix_k1(k1);
        h1 = h1.rotate_left(27).wrapping_add(h2);
        h1 = h1.wrapping_mul(5).wrapping_add(0x52dc_e729);
        h2 ^= mix_k2(k2);
        h2 = h2.rotate_left(31).wrapping_add(h1);
        h2 = h2.wrapping_mul(5).wrapping_add(0x3849_5ab5);
    }
    let tail = blocks.remainder();
    // Sign-extend each tail byte, as Cassandra's Java implementation does.
    let lane = |bytes: &[u8]| {
        bytes.iter().enumerate().fold(0u64, |acc, (i, &b)| {
            acc ^ ((b as i8 as i64 as u64) << (8 * i))
        })
    };
    if tail.len() > 8 {
        h2 ^= mix_k2(lane(&tail[8..]));
    }
    if !tail.is_empty() {
        h1 ^= mix_k1(lane(&tail[..tail.len().min(8)]));
    }
    let len = key.len() as u64;
    h1 ^= len;
    h2 ^= len;
    h1 = h1.wrapping_add(h2);
    h2 = h2.wrapping_add(h1);
    h1 = fmix(h1);
    h2 = fmix(h2);
    h1 = h1.wrapping_add(h2);
    let token = h1 as i64;
    if token == i64::MIN {
        i64::MAX
    } else {
        token
    }
}

fn mix_k1(k: u64) -> u64 {
    k.wrapping_mul(C1).rotate_left(31).wrapping_mul(C2)
}

fn mix_k2(k: u64) -> u64 {
    k.wrapping_mul(C2).rotate_left(33).wrapping_mul(C1)
}

fn fmix(mut k: u64) -> u64 {
    k ^= k >> 33;
    k = k.wrapping_mul(0xff51_afd7_ed55_8ccd);
    k ^= k >> 33;
    k = k.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    k ^= k >> 33;
    k
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_the_drivers_test_vectors() {
        assert_eq!(murmur3_token(b"123"), -7_468_325_962_851_647_638);
        assert_eq!(
            murmur3_token(&b"\x00\xff\x10\xfa\x99".repeat(10)),
            5_837_342_703_291_459_765
        );
        assert_eq!(murmur3_token(&[0xfe; 8]), -8_927_430_733_708_461_935);
        assert_eq!(murmur3_token(&[0x10; 8]), 1_446_172_840_243_228_796);
        assert_eq!(
            murmur3_token(b"9223372036854775807"),
            7_162_290_910_810_015_547
        );
    }
}
