//! Chunk headers written field by field, for tests and fuzz seeds: the
//! forms Prism's own `ChunkWriter` never produces (types 1-3 starting new
//! messages, two- and three-byte chunk stream ids, any chunking), so what
//! they feed the reader is not a round trip through Prism's writer.

/// The basic header: format and chunk stream id, in its 1-, 2- or 3-byte form.
pub fn basic(fmt: u8, csid: u32) -> Vec<u8> {
    match csid {
        2..=63 => vec![fmt << 6 | csid as u8],
        64..=319 => vec![fmt << 6, (csid - 64) as u8],
        _ => vec![fmt << 6 | 1, (csid - 64) as u8, ((csid - 64) >> 8) as u8],
    }
}

fn u24(v: u32) -> [u8; 3] {
    let b = v.to_be_bytes();
    [b[1], b[2], b[3]]
}

/// A type-0 header; timestamps from 0xFFFFFF up get the extended field.
pub fn type0(csid: u32, ts: u32, len: usize, type_id: u8, msid: u32) -> Vec<u8> {
    let mut h = basic(0, csid);
    h.extend(u24(ts.min(0xFF_FFFF)));
    h.extend(u24(len as u32));
    h.push(type_id);
    h.extend(msid.to_le_bytes());
    if ts >= 0xFF_FFFF {
        h.extend(ts.to_be_bytes());
    }
    h
}

/// A type-1 header: timestamp delta, length and type.
pub fn type1(csid: u32, delta: u32, len: usize, type_id: u8) -> Vec<u8> {
    let mut h = basic(1, csid);
    h.extend(u24(delta));
    h.extend(u24(len as u32));
    h.push(type_id);
    h
}

/// A type-2 header: timestamp delta only.
pub fn type2(csid: u32, delta: u32) -> Vec<u8> {
    let mut h = basic(2, csid);
    h.extend(u24(delta));
    h
}

/// One whole message: `header`, then `body` in `chunk`-byte chunks with
/// type-3 headers (no extended timestamp) between them.
pub fn whole(header: Vec<u8>, csid: u32, body: &[u8], chunk: usize) -> Vec<u8> {
    let mut wire = header;
    for (i, part) in body.chunks(chunk).enumerate() {
        if i > 0 {
            wire.extend(basic(3, csid));
        }
        wire.extend_from_slice(part);
    }
    wire
}

/// A Set Chunk Size message on chunk stream 2.
pub fn set_chunk_size(size: u32) -> Vec<u8> {
    let mut wire = type0(2, 0, 4, 1, 0);
    wire.extend(size.to_be_bytes());
    wire
}

/// The nesting bomb as a command body: "connect", 1, then a strict array
/// of one element that is an object-end marker, then `depth` nested
/// objects. A depth scanner that stops at the 0x09 lets it through to a
/// recursive decoder.
pub fn strict_array_bomb(depth: usize) -> Vec<u8> {
    let mut bomb = vec![2, 0, 7];
    bomb.extend_from_slice(b"connect");
    bomb.push(0);
    bomb.extend_from_slice(&1f64.to_be_bytes());
    bomb.extend_from_slice(&[0x0a, 0, 0, 0, 1, 0x09]);
    bomb.extend(nesting(depth));
    bomb
}

/// `depth` objects, each the only property of the one before.
pub fn nesting(depth: usize) -> Vec<u8> {
    [3, 0, 1, b'a'].repeat(depth)
}
