//! PURE ELF header, program-header and section-header parsing, 32/64-bit and
//! little/big endian, for exactly what identification needs: find a section
//! by name, the loadable segments, and map a virtual address to a file
//! offset. Every count and size read from the file is checked against the
//! file length and a fixed cap before it is used, and all reads go through
//! a [`Budget`], so a hostile header cannot make us read or allocate much.

use super::readat::{Budget, ReadAt, ReadError};

/// Executables with more section headers than this are parsed from their
/// segments alone (real executables have a few dozen).
pub const MAX_SECTIONS: u64 = 1024;
pub const MAX_SEGMENTS: u64 = 256;
/// Only this much of the section-name string table is read; names past it
/// stay empty (real tables are a few hundred bytes).
const MAX_SHSTRTAB: u64 = 64 * 1024;

pub const PT_LOAD: u32 = 1;
pub const PF_W: u32 = 2;
const SHT_NOBITS: u32 = 8;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ElfError {
    #[error("not an ELF file")]
    NotElf,
    #[error("unsupported ELF class or byte order")]
    Unsupported,
    #[error("malformed ELF: {0}")]
    Malformed(&'static str),
    #[error(transparent)]
    Read(#[from] ReadError),
}

/// Byte order of the file; also used for Go's build info fields.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Endian {
    pub big: bool,
}

impl Endian {
    pub fn uint(self, b: &[u8], at: usize, width: usize) -> Option<u64> {
        let s = b.get(at..at.checked_add(width)?)?;
        if !matches!(width, 1 | 2 | 4 | 8) {
            return None;
        }
        let fold = |acc: u64, &x: &u8| (acc << 8) | u64::from(x);
        Some(if self.big {
            s.iter().fold(0, fold)
        } else {
            s.iter().rev().fold(0, fold)
        })
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Section {
    /// The name, when it was within the string table and valid UTF-8.
    pub name: String,
    pub sh_type: u32,
    pub addr: u64,
    pub offset: u64,
    pub size: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Segment {
    pub p_type: u32,
    pub flags: u32,
    pub offset: u64,
    pub vaddr: u64,
    pub filesz: u64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Elf {
    pub is_64: bool,
    pub endian: Endian,
    pub sections: Vec<Section>,
    pub segments: Vec<Segment>,
}

/// Field offsets that differ between the two classes.
struct Layout {
    phoff: (usize, usize),
    shoff: (usize, usize),
    phentsize: usize,
    phnum: usize,
    shentsize: usize,
    shnum: usize,
    shstrndx: usize,
    word: usize,
}

const L32: Layout = Layout {
    phoff: (0x1c, 4),
    shoff: (0x20, 4),
    phentsize: 0x2a,
    phnum: 0x2c,
    shentsize: 0x2e,
    shnum: 0x30,
    shstrndx: 0x32,
    word: 4,
};
const L64: Layout = Layout {
    phoff: (0x20, 8),
    shoff: (0x28, 8),
    phentsize: 0x36,
    phnum: 0x38,
    shentsize: 0x3a,
    shnum: 0x3c,
    shstrndx: 0x3e,
    word: 8,
};

const BAD_HEADER: ElfError = ElfError::Malformed("header");

impl Elf {
    /// Parses the headers of `r`.
    pub fn parse<R: ReadAt + ?Sized>(r: &Budget<'_, R>) -> Result<Elf, ElfError> {
        let mut h = [0u8; 64];
        let short = r.size() < 52;
        if short || r.read(0, &mut h[..52]).is_err() || &h[..4] != b"\x7fELF" {
            return Err(ElfError::NotElf);
        }
        let is_64 = match h[4] {
            1 => false,
            2 => true,
            _ => return Err(ElfError::Unsupported),
        };
        let endian = match h[5] {
            1 => Endian { big: false },
            2 => Endian { big: true },
            _ => return Err(ElfError::Unsupported),
        };
        if is_64 {
            r.read(52, &mut h[52..64]).map_err(|_| BAD_HEADER)?;
        }
        let l = if is_64 { &L64 } else { &L32 };
        let f = |at: usize, w: usize| endian.uint(&h, at, w).ok_or(BAD_HEADER);
        let mut elf = Elf {
            is_64,
            endian,
            sections: Vec::new(),
            segments: Vec::new(),
        };
        let phoff = f(l.phoff.0, l.phoff.1)?;
        let phnum = f(l.phnum, 2)?;
        let phentsize = f(l.phentsize, 2)?;
        elf.segments = read_segments(r, l, endian, phoff, phnum, phentsize)?;
        let shoff = f(l.shoff.0, l.shoff.1)?;
        let shnum = f(l.shnum, 2)?;
        let shentsize = f(l.shentsize, 2)?;
        let shstrndx = f(l.shstrndx, 2)?;
        // Section headers are optional for execution: a file without them
        // (or with too many) is still identified from its segments.
        if shoff != 0 && (1..=MAX_SECTIONS).contains(&shnum) {
            elf.sections = read_sections(r, l, endian, shoff, shnum, shentsize, shstrndx)?;
        }
        Ok(elf)
    }

    pub fn section(&self, name: &str) -> Option<&Section> {
        self.sections.iter().find(|s| s.name == name)
    }

    /// File offset of `len` bytes at virtual address `addr`, when one
    /// loadable segment holds them all in the file.
    pub fn vaddr_to_offset(&self, addr: u64, len: u64) -> Option<u64> {
        self.segments.iter().find_map(|s| {
            let rel = addr.checked_sub(s.vaddr)?;
            (s.p_type == PT_LOAD && rel.checked_add(len)? <= s.filesz)
                .then(|| s.offset.checked_add(rel))
                .flatten()
        })
    }
}

/// Reads `num` table entries of `entsize` bytes at `off` in one read.
fn read_table<R: ReadAt + ?Sized>(
    r: &Budget<'_, R>,
    off: u64,
    num: u64,
    entsize: u64,
    min_entsize: u64,
) -> Result<Vec<u8>, ElfError> {
    if entsize < min_entsize || entsize > 1024 {
        return Err(ElfError::Malformed("table entry size"));
    }
    let len = num * entsize; // both are at most 16 bits: no overflow
    r.read_vec(off, len)
        .map_err(|_| ElfError::Malformed("table outside the file"))
}

fn read_segments<R: ReadAt + ?Sized>(
    r: &Budget<'_, R>,
    l: &Layout,
    e: Endian,
    off: u64,
    num: u64,
    entsize: u64,
) -> Result<Vec<Segment>, ElfError> {
    if off == 0 || num == 0 {
        return Ok(Vec::new());
    }
    let num = num.min(MAX_SEGMENTS);
    let w = l.word;
    let min = if w == 8 { 56 } else { 32 };
    let t = read_table(r, off, num, entsize, min)?;
    let mut out = Vec::with_capacity(num as usize);
    for ent in t.chunks_exact(entsize as usize) {
        let g = |at: usize, width: usize| e.uint(ent, at, width).ok_or(BAD_HEADER);
        // The 64-bit layout moved p_flags next to p_type for alignment.
        let (flags, offset, vaddr, filesz) = if w == 8 {
            (g(4, 4)?, g(8, 8)?, g(16, 8)?, g(32, 8)?)
        } else {
            (g(24, 4)?, g(4, 4)?, g(8, 4)?, g(16, 4)?)
        };
        out.push(Segment {
            p_type: g(0, 4)? as u32,
            flags: flags as u32,
            offset,
            vaddr,
            filesz,
        });
    }
    Ok(out)
}

fn read_sections<R: ReadAt + ?Sized>(
    r: &Budget<'_, R>,
    l: &Layout,
    e: Endian,
    off: u64,
    num: u64,
    entsize: u64,
    shstrndx: u64,
) -> Result<Vec<Section>, ElfError> {
    let w = l.word;
    let min = if w == 8 { 64 } else { 40 };
    let t = read_table(r, off, num, entsize, min)?;
    let mut out = Vec::with_capacity(num as usize);
    let mut name_offs = Vec::with_capacity(num as usize);
    for ent in t.chunks_exact(entsize as usize) {
        let g = |at: usize, width: usize| e.uint(ent, at, width).ok_or(BAD_HEADER);
        // sh_name, sh_type, sh_flags (word), sh_addr, sh_offset, sh_size.
        name_offs.push(g(0, 4)?);
        out.push(Section {
            name: String::new(),
            sh_type: g(4, 4)? as u32,
            addr: g(8 + w, w)?,
            offset: g(8 + 2 * w, w)?,
            size: g(8 + 3 * w, w)?,
        });
    }
    // Names are a convenience: a bad string table leaves them empty.
    let strtab = usize::try_from(shstrndx)
        .ok()
        .and_then(|i| out.get(i))
        .filter(|s| s.sh_type != SHT_NOBITS)
        .and_then(|s| r.read_vec(s.offset, s.size.min(MAX_SHSTRTAB)).ok());
    if let Some(strtab) = strtab {
        for (s, &no) in out.iter_mut().zip(&name_offs) {
            let tail = usize::try_from(no).ok().and_then(|i| strtab.get(i..));
            if let Some(tail) = tail {
                let end = tail.iter().position(|&b| b == 0).unwrap_or(tail.len());
                s.name = String::from_utf8_lossy(&tail[..end]).into_owned();
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::super::testelf::{Build, build};
    use super::*;

    fn parse(b: &[u8]) -> Result<Elf, ElfError> {
        Elf::parse(&Budget::new(b, 1 << 20))
    }

    #[test]
    fn all_four_classes_and_byte_orders_parse() {
        for is_64 in [false, true] {
            for big in [false, true] {
                let f = build(&Build {
                    is_64,
                    big,
                    ..Build::default()
                });
                let e = parse(&f).unwrap();
                assert_eq!((e.is_64, e.endian.big), (is_64, big));
                let s = e.section(".go.buildinfo").expect("section found by name");
                assert_eq!(e.vaddr_to_offset(s.addr, 16), Some(s.offset));
            }
        }
    }

    #[test]
    fn rejects_non_elf_and_short_files() {
        assert_eq!(parse(b"#!/bin/sh\n"), Err(ElfError::NotElf));
        assert_eq!(parse(&[]), Err(ElfError::NotElf));
        let mut f = build(&Build::default());
        f[4] = 9;
        assert_eq!(parse(&f), Err(ElfError::Unsupported));
    }

    #[test]
    fn every_truncation_and_every_byte_flip_is_an_error_or_a_value() {
        let f = build(&Build::default());
        for n in 0..f.len() {
            let _ = parse(&f[..n]);
        }
        for i in 0..f.len().min(256) {
            for v in [0u8, 0x7f, 0xff] {
                let mut g = f.clone();
                g[i] = v;
                let _ = parse(&g);
            }
        }
    }
}
