//! Byte-level layout: the fixed header, the table of contents, varints and a bounds-checked reader.
//!
//! Every read from untrusted bytes goes through [`Reader`], which returns
//! [`Error::Truncated`] instead of indexing past the end, so no parse path can panic. The table of
//! contents is parsed completely (and checked against the limits) before any section is
//! decompressed, which is what lets the decoder refuse a hostile payload before allocating for it.

use super::error::Error;
use super::mode::Values;

pub const MAGIC: [u8; 4] = *b"RVDC";
pub const VERSION: u16 = 1;
/// magic 4 + version 2 + flags 2 + tensor count 4 + toc length 4 + body length 8 + crc 4 + reserved 4.
pub const HEADER_LEN: usize = 32;
/// The format's own caps (a [`super::Limits`] may be stricter, never looser).
pub const MAX_NAME_LEN: usize = u16::MAX as usize;
pub const MAX_NDIM: usize = 8;

/// Sparsity codes in a tensor's header.
pub const DENSE: u8 = 0;
pub const TOPK: u8 = 1;

/// The fixed-size payload header.
#[derive(Debug, Clone, PartialEq)]
pub struct Header {
    pub tensor_count: u32,
    pub toc_len: u32,
    pub body_len: u64,
    pub crc32: u32,
}

impl Header {
    pub fn write(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&MAGIC);
        out.extend_from_slice(&VERSION.to_le_bytes());
        out.extend_from_slice(&0u16.to_le_bytes());
        out.extend_from_slice(&self.tensor_count.to_le_bytes());
        out.extend_from_slice(&self.toc_len.to_le_bytes());
        out.extend_from_slice(&self.body_len.to_le_bytes());
        out.extend_from_slice(&self.crc32.to_le_bytes());
        out.extend_from_slice(&0u32.to_le_bytes());
    }

    pub fn read(r: &mut Reader<'_>) -> Result<Self, Error> {
        let magic = r.array::<4>("magic")?;
        if magic != MAGIC {
            return Err(Error::BadMagic { found: magic });
        }
        let version = r.u16("version")?;
        if version != VERSION {
            return Err(Error::UnsupportedVersion {
                found: version,
                supported: VERSION,
            });
        }
        let flags = r.u16("flags")?;
        if flags != 0 {
            return Err(Error::Reserved {
                field: "flags",
                value: flags.into(),
            });
        }
        let tensor_count = r.u32("tensor count")?;
        let toc_len = r.u32("toc length")?;
        let body_len = r.u64("body length")?;
        let crc32 = r.u32("checksum")?;
        let reserved = r.u32("reserved")?;
        if reserved != 0 {
            return Err(Error::Reserved {
                field: "header reserved",
                value: reserved.into(),
            });
        }
        Ok(Self {
            tensor_count,
            toc_len,
            body_len,
            crc32,
        })
    }
}

/// One tensor's entry in the table of contents.
#[derive(Debug, Clone, PartialEq)]
pub struct Entry {
    pub name: String,
    pub shape: Vec<u64>,
    pub values: Values,
    /// [`DENSE`] or [`TOPK`].
    pub sparsity: u8,
    /// 1 when the value plane is byte-shuffled.
    pub shuffled: bool,
    /// Number of values stored (numel when dense).
    pub stored: u64,
    /// Bytes of the varint index stream at the start of the section (0 when dense).
    pub index_len: u64,
    /// Decompressed section length.
    pub raw_len: u64,
    /// Compressed (zstd frame) section length.
    pub comp_len: u64,
}

impl Entry {
    pub fn write(&self, out: &mut Vec<u8>) {
        // Callers check name length and ndim against the format caps before building an entry.
        out.extend_from_slice(&(self.name.len() as u16).to_le_bytes());
        out.extend_from_slice(self.name.as_bytes());
        out.push(self.shape.len() as u8);
        for d in &self.shape {
            out.extend_from_slice(&d.to_le_bytes());
        }
        out.push(self.values.code());
        out.push(self.sparsity);
        out.push(u8::from(self.shuffled));
        out.push(0); // reserved
        out.extend_from_slice(&self.stored.to_le_bytes());
        out.extend_from_slice(&self.index_len.to_le_bytes());
        out.extend_from_slice(&self.raw_len.to_le_bytes());
        out.extend_from_slice(&self.comp_len.to_le_bytes());
    }

    /// Reads one entry; `max_name` and `max_ndim` are checked before the name or dims are read.
    pub fn read(
        r: &mut Reader<'_>,
        index: usize,
        max_name: usize,
        max_ndim: usize,
    ) -> Result<Self, Error> {
        let name_len = r.u16("name length")? as usize;
        if name_len > max_name {
            return Err(Error::LimitExceeded {
                what: "name length",
                declared: name_len as u64,
                limit: max_name as u64,
            });
        }
        let name = std::str::from_utf8(r.bytes(name_len, "name")?)
            .map_err(|_| Error::NameUtf8 { index })?
            .to_string();
        let ndim = r.u8("ndim")? as usize;
        if ndim > max_ndim.min(MAX_NDIM) {
            return Err(Error::LimitExceeded {
                what: "ndim",
                declared: ndim as u64,
                limit: max_ndim.min(MAX_NDIM) as u64,
            });
        }
        let mut shape = Vec::with_capacity(ndim);
        for _ in 0..ndim {
            shape.push(r.u64("dimension")?);
        }
        let code = r.u8("value encoding")?;
        let values = Values::from_code(code).ok_or_else(|| Error::UnknownCode {
            tensor: name.clone(),
            field: "value encoding",
            code,
        })?;
        let sparsity = r.u8("sparsity")?;
        if sparsity != DENSE && sparsity != TOPK {
            return Err(Error::UnknownCode {
                tensor: name,
                field: "sparsity",
                code: sparsity,
            });
        }
        let shuffle = r.u8("shuffle")?;
        let shuffled = match shuffle {
            0 => false,
            1 => true,
            code => {
                return Err(Error::UnknownCode {
                    tensor: name,
                    field: "shuffle",
                    code,
                });
            }
        };
        let reserved = r.u8("entry reserved")?;
        if reserved != 0 {
            return Err(Error::Reserved {
                field: "entry reserved",
                value: reserved.into(),
            });
        }
        Ok(Self {
            name,
            shape,
            values,
            sparsity,
            shuffled,
            stored: r.u64("stored count")?,
            index_len: r.u64("index length")?,
            raw_len: r.u64("section length")?,
            comp_len: r.u64("compressed length")?,
        })
    }

    /// Number of values the tensor holds, or `None` when the product overflows u64.
    pub fn numel(&self) -> Option<u64> {
        self.shape.iter().try_fold(1u64, |a, &d| a.checked_mul(d))
    }
}

/// A cursor over untrusted bytes whose every read is bounds-checked.
pub struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    pub fn new(buf: &'a [u8]) -> Self {
        Self { buf, pos: 0 }
    }

    pub fn remaining(&self) -> usize {
        self.buf.len().saturating_sub(self.pos)
    }

    pub fn bytes(&mut self, n: usize, what: &'static str) -> Result<&'a [u8], Error> {
        let rest = self.buf.get(self.pos..).unwrap_or(&[]);
        let out = rest.get(..n).ok_or(Error::Truncated {
            what,
            needed: n as u64,
            available: rest.len() as u64,
        })?;
        self.pos += n;
        Ok(out)
    }

    pub fn array<const N: usize>(&mut self, what: &'static str) -> Result<[u8; N], Error> {
        let b = self.bytes(N, what)?;
        let mut a = [0u8; N];
        a.copy_from_slice(b);
        Ok(a)
    }

    pub fn u8(&mut self, what: &'static str) -> Result<u8, Error> {
        Ok(self.array::<1>(what)?[0])
    }

    pub fn u16(&mut self, what: &'static str) -> Result<u16, Error> {
        Ok(u16::from_le_bytes(self.array(what)?))
    }

    pub fn u32(&mut self, what: &'static str) -> Result<u32, Error> {
        Ok(u32::from_le_bytes(self.array(what)?))
    }

    pub fn u64(&mut self, what: &'static str) -> Result<u64, Error> {
        Ok(u64::from_le_bytes(self.array(what)?))
    }
}

/// Appends `v` as an LEB128 varint (7 bits per byte, low bits first).
pub fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

/// Reads one LEB128 varint from `buf[*pos..]`; `None` when it is cut off or longer than 64 bits.
pub fn get_varint(buf: &[u8], pos: &mut usize) -> Option<u64> {
    let mut v: u64 = 0;
    for shift in (0..64).step_by(7) {
        let b = *buf.get(*pos)?;
        *pos += 1;
        let bits = u64::from(b & 0x7f);
        if shift == 63 && bits > 1 {
            return None;
        }
        v |= bits << shift;
        if b & 0x80 == 0 {
            return Some(v);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn varint_round_trip_and_rejects() {
        let vals = [0u64, 1, 127, 128, 300, 1 << 35, u64::MAX];
        let mut buf = Vec::new();
        for v in vals {
            put_varint(&mut buf, v);
        }
        let mut pos = 0;
        for v in vals {
            assert_eq!(get_varint(&buf, &mut pos), Some(v));
        }
        assert_eq!(pos, buf.len());
        assert_eq!(get_varint(&[0x80], &mut 0), None);
        assert_eq!(get_varint(&[0xff; 10], &mut 0), None);
        assert_eq!(
            get_varint(
                &[0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x02],
                &mut 0
            ),
            None
        );
    }

    #[test]
    fn header_and_entry_round_trip() {
        let h = Header {
            tensor_count: 3,
            toc_len: 77,
            body_len: 1234,
            crc32: 0xdead_beef,
        };
        let mut buf = Vec::new();
        h.write(&mut buf);
        assert_eq!(buf.len(), HEADER_LEN);
        assert_eq!(Header::read(&mut Reader::new(&buf)).unwrap(), h);
        let e = Entry {
            name: "a.b".into(),
            shape: vec![4, 2],
            values: Values::Int4Block,
            sparsity: TOPK,
            shuffled: true,
            stored: 3,
            index_len: 3,
            raw_len: 9,
            comp_len: 20,
        };
        let mut buf = Vec::new();
        e.write(&mut buf);
        assert_eq!(Entry::read(&mut Reader::new(&buf), 0, 64, 8).unwrap(), e);
        for cut in 0..buf.len() {
            assert!(matches!(
                Entry::read(&mut Reader::new(&buf[..cut]), 0, 64, 8),
                Err(Error::Truncated { .. })
            ));
        }
        assert!(matches!(
            Entry::read(&mut Reader::new(&buf), 0, 2, 8),
            Err(Error::LimitExceeded {
                what: "name length",
                ..
            })
        ));
    }
}
