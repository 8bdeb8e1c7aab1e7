//! An event's `format` file from tracefs: where each field of a record
//! lies. Records are decoded by these offsets, never by a layout assumed
//! for one kernel, and the largest record a probe can produce is computed
//! from them before the probe is enabled.

use std::collections::HashMap;

/// One field of a trace record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Field {
    pub offset: usize,
    pub size: usize,
    /// `__data_loc`: the field holds a u32 (length << 16 | offset) and the
    /// bytes lie later in the record.
    pub dynamic: bool,
}

/// The decoded `format` file of one event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Format {
    pub name: String,
    pub id: u16,
    pub fields: HashMap<String, Field>,
    /// End of the fixed part of the record: offset + size of the last field.
    pub fixed_size: usize,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum FormatError {
    #[error("no `ID:` line")]
    NoId,
    #[error("line {0}: cannot read field `{1}`")]
    BadField(usize, String),
}

impl Format {
    pub fn parse(text: &str) -> Result<Format, FormatError> {
        let mut name = String::new();
        let mut id = None;
        let mut fields = HashMap::new();
        let mut fixed_size = 0;
        for (n, line) in text.lines().enumerate() {
            let line = line.trim();
            if let Some(v) = line.strip_prefix("name:") {
                name = v.trim().to_string();
            } else if let Some(v) = line.strip_prefix("ID:") {
                id = v.trim().parse::<u16>().ok();
            } else if line.starts_with("field:") {
                let (fname, field) = parse_field(line)
                    .ok_or_else(|| FormatError::BadField(n + 1, line.to_string()))?;
                fixed_size = fixed_size.max(field.offset + field.size);
                fields.insert(fname, field);
            }
        }
        Ok(Format {
            name,
            id: id.ok_or(FormatError::NoId)?,
            fields,
            fixed_size,
        })
    }

    pub fn field(&self, name: &str) -> Option<Field> {
        self.fields.get(name).copied()
    }

    /// A u64 (or shorter unsigned) field of `rec`; None when the record is
    /// too short.
    pub fn u64_of(&self, rec: &[u8], name: &str) -> Option<u64> {
        let f = self.field(name)?;
        let b = rec.get(f.offset..f.offset + f.size)?;
        let mut v = [0u8; 8];
        v.get_mut(..b.len())?.copy_from_slice(b);
        Some(u64::from_ne_bytes(v))
    }

    /// The bytes of a fixed-size field.
    pub fn bytes_of<'a>(&self, rec: &'a [u8], name: &str) -> Option<&'a [u8]> {
        let f = self.field(name)?;
        if f.dynamic {
            return None;
        }
        rec.get(f.offset..f.offset + f.size)
    }

    /// A `__data_loc` string (like `$comm`), without its NUL.
    pub fn string_of<'a>(&self, rec: &'a [u8], name: &str) -> Option<&'a [u8]> {
        let f = self.field(name)?;
        if !f.dynamic || f.size != 4 {
            return None;
        }
        let loc = u32::from_ne_bytes(rec.get(f.offset..f.offset + 4)?.try_into().ok()?);
        let (off, len) = ((loc & 0xffff) as usize, (loc >> 16) as usize);
        let s = rec.get(off..off + len)?;
        Some(s.split(|&b| b == 0).next().unwrap_or(s))
    }
}

/// `field:u64 b0[64]; offset:40; size:512; signed:0;` (5.10) or
/// `field:u64 b0[]; offset:40; size:512; signed:0;` (6.1) or
/// `field:__data_loc char[] comm; offset:16; size:4; signed:1;`
/// (tab-separated).
fn parse_field(line: &str) -> Option<(String, Field)> {
    let mut decl = None;
    let mut offset = None;
    let mut size = None;
    for part in line.split(';') {
        let part = part.trim();
        if let Some(v) = part.strip_prefix("field:") {
            decl = Some(v.trim());
        } else if let Some(v) = part.strip_prefix("offset:") {
            offset = v.trim().parse().ok();
        } else if let Some(v) = part.strip_prefix("size:") {
            size = v.trim().parse().ok();
        }
    }
    let decl = decl?;
    let last = decl.rsplit(char::is_whitespace).next()?;
    let name = last.split('[').next()?.trim_start_matches('*');
    if name.is_empty() {
        return None;
    }
    Some((
        name.to_string(),
        Field {
            offset: offset?,
            size: size?,
            dynamic: decl.starts_with("__data_loc"),
        },
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    const FMT_510: &str = "name: argv0\nID: 1270\nformat:\n\
\tfield:unsigned short common_type;\toffset:0;\tsize:2;\tsigned:0;\n\
\tfield:unsigned char common_flags;\toffset:2;\tsize:1;\tsigned:0;\n\
\tfield:unsigned char common_preempt_count;\toffset:3;\tsize:1;\tsigned:0;\n\
\tfield:int common_pid;\toffset:4;\tsize:4;\tsigned:1;\n\
\n\
\tfield:unsigned long __probe_ip;\toffset:8;\tsize:8;\tsigned:0;\n\
\tfield:u64 sp;\toffset:16;\tsize:8;\tsigned:0;\n\
\tfield:__data_loc char[] comm;\toffset:24;\tsize:4;\tsigned:1;\n\
\tfield:u64 b0[64];\toffset:28;\tsize:512;\tsigned:0;\n\
\nprint fmt: \"(%lx) sp=%Lu\", REC->__probe_ip, REC->sp\n";

    #[test]
    fn reads_fields_of_5_10_and_6_1() {
        let f = Format::parse(FMT_510).unwrap();
        assert_eq!(f.id, 1270);
        assert_eq!(f.name, "argv0");
        assert_eq!(
            f.field("b0").unwrap(),
            Field {
                offset: 28,
                size: 512,
                dynamic: false
            }
        );
        assert!(f.field("comm").unwrap().dynamic);
        assert_eq!(f.fixed_size, 540);
        // 6.1 prints arrays as `b0[]`.
        let f61 = Format::parse(&FMT_510.replace("b0[64]", "b0[]")).unwrap();
        assert_eq!(f61.field("b0"), f.field("b0"));
    }

    #[test]
    fn decodes_a_record() {
        let f = Format::parse(FMT_510).unwrap();
        let mut rec = vec![0u8; 560];
        rec[16..24].copy_from_slice(&0x7ffd_1234u64.to_ne_bytes());
        let loc: u32 = (5 << 16) | 540;
        rec[24..28].copy_from_slice(&loc.to_ne_bytes());
        rec[540..545].copy_from_slice(b"true\0");
        rec[28] = b'/';
        assert_eq!(f.u64_of(&rec, "sp"), Some(0x7ffd_1234));
        assert_eq!(f.string_of(&rec, "comm"), Some(&b"true"[..]));
        assert_eq!(f.bytes_of(&rec, "b0").unwrap()[0], b'/');
        // A short record yields nothing rather than a panic.
        assert_eq!(f.u64_of(&rec[..20], "sp"), None);
        assert_eq!(f.string_of(&rec[..541], "comm"), None);
    }

    #[test]
    fn rejects_garbage() {
        assert_eq!(Format::parse("name: x\n"), Err(FormatError::NoId));
        assert!(matches!(
            Format::parse("ID: 3\nfield:u64 x;\toffset:zz;\tsize:8;\n"),
            Err(FormatError::BadField(2, _))
        ));
    }
}
