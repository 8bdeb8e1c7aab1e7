//! PURE parsing of the Go toolchain's build information, the 32-byte
//! header that `go build` writes at the start of the `.go.buildinfo`
//! section, followed by the Go version and the module info text:
//!
//! - bytes 0..14: the magic `\xff Go buildinf:`; byte 14: pointer size (4 or
//!   8); byte 15: flags (bit 0: big-endian pointers, bit 1: strings inline).
//! - Go ≥ 1.18 (inline): at byte 32, two strings, each a uvarint length and
//!   its bytes: the runtime version (`go1.22.1`) and the module info.
//! - older: at byte 16, two pointers to Go string headers (data pointer,
//!   length), resolved through the ELF's loadable segments.
//!
//! The module info is wrapped in two 16-byte sentinels and holds lines such
//! as `path\t<main package>`, `mod\t<path>\t<version>\t<sum>`, `dep\t…` and
//! `=>\t…` (the replacement of the line before).
//!
//! Without section headers the magic is searched, 16-byte aligned, at the
//! start of the first writable segment, where Go's own linker puts it.

use super::elf::{Elf, PF_W, PT_LOAD};
use super::readat::{Budget, ReadAt, ReadError};

const MAGIC: &[u8; 14] = b"\xff Go buildinf:";
const HEADER: usize = 32;
/// Longer version or module-info strings are treated as malformed.
pub const MAX_STRING: u64 = 256 * 1024;
/// How far into a section-less file's data segment the magic is searched.
pub const MAX_SCAN: u64 = 1024 * 1024;
const SCAN_CHUNK: u64 = 64 * 1024;
const MAX_VERSION: usize = 64;

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Module {
    pub path: String,
    pub version: String,
    pub sum: String,
    /// The `=>` line that replaced this module, if any.
    pub replaced_by: Option<Box<Module>>,
}

/// What a Go binary says about itself.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GoBuildInfo {
    /// `go1.22.1`, or `devel …` for toolchain builds.
    pub go_version: String,
    /// The main package path (`github.com/docker/cli/cmd/docker`); empty
    /// when the binary was built without module info.
    pub main_path: String,
    pub main_module: Option<Module>,
    pub deps: Vec<Module>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BuildInfoError {
    #[error("malformed Go build info: {0}")]
    Malformed(&'static str),
    #[error(transparent)]
    Read(#[from] ReadError),
}

type Result<T> = std::result::Result<T, BuildInfoError>;
const fn bad<T>(what: &'static str) -> Result<T> {
    Err(BuildInfoError::Malformed(what))
}

/// The build info of an ELF file; `Ok(None)` when it is not a Go binary.
pub fn read<R: ReadAt + ?Sized>(r: &Budget<'_, R>, elf: &Elf) -> Result<Option<GoBuildInfo>> {
    let Some(start) = locate(r, elf)? else {
        return Ok(None);
    };
    let mut h = [0u8; HEADER];
    r.read(start, &mut h)?;
    let ptr_size = usize::from(h[14]);
    let flags = h[15];
    let (version, modinfo) = if flags & 2 != 0 {
        let (version, next) = read_varint_string(r, start + HEADER as u64)?;
        let (modinfo, _) = read_varint_string(r, next)?;
        (version, modinfo)
    } else {
        if ptr_size != 4 && ptr_size != 8 {
            return bad("pointer size");
        }
        let e = super::elf::Endian {
            big: flags & 1 != 0,
        };
        let ptr = |at: usize| {
            e.uint(&h, at, ptr_size)
                .ok_or(BuildInfoError::Malformed("header"))
        };
        let (vp, mp) = (ptr(16)?, ptr(16 + ptr_size)?);
        (
            read_go_string(r, elf, e, ptr_size, vp)?,
            read_go_string(r, elf, e, ptr_size, mp)?,
        )
    };
    parse(&version, &modinfo).map(Some)
}

/// File offset of the build info header, if there is one.
fn locate<R: ReadAt + ?Sized>(r: &Budget<'_, R>, elf: &Elf) -> Result<Option<u64>> {
    if let Some(s) = elf.section(".go.buildinfo") {
        let mut m = [0u8; 14];
        r.read(s.offset, &mut m)?;
        return if &m == MAGIC {
            Ok(Some(s.offset))
        } else {
            bad("section without magic")
        };
    }
    if !elf.sections.is_empty() {
        return Ok(None);
    }
    let Some(seg) = elf
        .segments
        .iter()
        .find(|s| s.p_type == PT_LOAD && s.flags & PF_W != 0)
    else {
        return Ok(None);
    };
    let end = seg.filesz.min(MAX_SCAN);
    let mut at = 0;
    while at < end {
        let len = SCAN_CHUNK.min(end - at);
        let Ok(chunk) = r.read_vec(seg.offset.saturating_add(at), len) else {
            return Ok(None);
        };
        // Go aligns the header to 16 bytes within the segment.
        let found = (0..chunk.len())
            .step_by(16)
            .find(|&i| chunk.get(i..i + MAGIC.len()) == Some(&MAGIC[..]));
        if let Some(i) = found {
            return Ok(Some(seg.offset + at + i as u64));
        }
        at += len;
    }
    Ok(None)
}

fn read_varint_string<R: ReadAt + ?Sized>(r: &Budget<'_, R>, at: u64) -> Result<(Vec<u8>, u64)> {
    let mut b = [0u8; 10];
    let n = (r.size().saturating_sub(at)).min(10) as usize;
    r.read(at, &mut b[..n])?;
    let (len, used) = uvarint(&b[..n]).ok_or(BuildInfoError::Malformed("varint"))?;
    if len > MAX_STRING {
        return bad("string too long");
    }
    let data_at = at + used as u64;
    Ok((r.read_vec(data_at, len)?, data_at + len))
}

/// Unsigned LEB128: the value and the bytes it took.
fn uvarint(b: &[u8]) -> Option<(u64, usize)> {
    let mut v: u64 = 0;
    for (i, &x) in b.iter().enumerate().take(10) {
        let part = u64::from(x & 0x7f);
        if i == 9 && x > 1 {
            return None; // overflows 64 bits
        }
        v |= part << (7 * i);
        if x & 0x80 == 0 {
            return Some((v, i + 1));
        }
    }
    None
}

/// A Go string header (data pointer, length) at virtual address `addr`.
fn read_go_string<R: ReadAt + ?Sized>(
    r: &Budget<'_, R>,
    elf: &Elf,
    e: super::elf::Endian,
    ptr_size: usize,
    addr: u64,
) -> Result<Vec<u8>> {
    let hlen = 2 * ptr_size as u64;
    let Some(off) = elf.vaddr_to_offset(addr, hlen) else {
        return bad("string header outside the file");
    };
    let mut sh = [0u8; 16];
    let sh = &mut sh[..2 * ptr_size];
    r.read(off, sh)?;
    let (data, len) = match (e.uint(sh, 0, ptr_size), e.uint(sh, ptr_size, ptr_size)) {
        (Some(d), Some(l)) => (d, l),
        _ => return bad("string header"),
    };
    if len > MAX_STRING {
        return bad("string too long");
    }
    match elf.vaddr_to_offset(data, len) {
        Some(off) => Ok(r.read_vec(off, len)?),
        None => bad("string outside the file"),
    }
}

/// Builds the result from the two raw strings.
pub fn parse(version: &[u8], modinfo: &[u8]) -> Result<GoBuildInfo> {
    let version = std::str::from_utf8(version)
        .ok()
        .filter(|v| v.len() <= MAX_VERSION && v.bytes().all(|b| b.is_ascii_graphic() || b == b' '))
        .ok_or(BuildInfoError::Malformed("version"))?;
    let mut info = GoBuildInfo {
        go_version: version.to_string(),
        ..GoBuildInfo::default()
    };
    // The sentinels carry no information; without them there is none.
    let n = modinfo.len();
    if n < 33 || modinfo[n - 17] != b'\n' {
        return Ok(info);
    }
    let text = String::from_utf8_lossy(&modinfo[16..n - 16]);
    for line in text.lines() {
        let mut f = line.split('\t');
        match f.next() {
            Some("path") => info.main_path = f.next().unwrap_or("").to_string(),
            Some(kind @ ("mod" | "dep" | "=>")) => {
                let m = Module {
                    path: f.next().unwrap_or("").to_string(),
                    version: f.next().unwrap_or("").to_string(),
                    sum: f.next().unwrap_or("").to_string(),
                    replaced_by: None,
                };
                match kind {
                    "mod" => info.main_module = Some(m),
                    "dep" => info.deps.push(m),
                    _ => {
                        let last = info.deps.last_mut().or(info.main_module.as_mut());
                        if let Some(prev) = last {
                            prev.replaced_by = Some(Box::new(m));
                        }
                    }
                }
            }
            _ => {}
        }
    }
    Ok(info)
}

#[cfg(test)]
mod tests {
    use super::super::testelf::{Build, build, modinfo};
    use super::*;

    fn go(f: &[u8]) -> Result<Option<GoBuildInfo>> {
        let r = Budget::new(f, 2 << 20);
        let elf = Elf::parse(&r).map_err(|_| BuildInfoError::Malformed("elf"))?;
        read(&r, &elf)
    }

    #[test]
    fn inline_and_pointer_formats_in_every_class_and_byte_order() {
        for is_64 in [false, true] {
            for big in [false, true] {
                for inline in [false, true] {
                    let f = build(&Build {
                        is_64,
                        big,
                        inline,
                        ..Build::default()
                    });
                    let info = go(&f).unwrap().expect("Go binary");
                    assert_eq!(info.go_version, "go1.22.1", "{is_64} {big} {inline}");
                    assert_eq!(info.main_path, "github.com/docker/cli/cmd/docker");
                    let m = info.main_module.unwrap();
                    assert_eq!(
                        (m.path.as_str(), m.version.as_str()),
                        ("github.com/docker/cli", "(devel)")
                    );
                    assert_eq!(info.deps.len(), 1);
                    assert_eq!(info.deps[0].replaced_by.as_ref().unwrap().path, "../local");
                }
            }
        }
    }

    #[test]
    fn section_less_files_are_found_in_the_data_segment() {
        let f = build(&Build {
            no_sections: true,
            ..Build::default()
        });
        assert_eq!(
            go(&f).unwrap().unwrap().main_path,
            "github.com/docker/cli/cmd/docker"
        );
    }

    #[test]
    fn non_go_elf_is_none_and_sentinel_less_modinfo_is_empty() {
        let f = build(&Build {
            section_name: ".data",
            ..Build::default()
        });
        assert_eq!(go(&f).unwrap(), None);
        let info = parse(b"go1.10", b"path\tx\n").unwrap();
        assert_eq!(
            (info.go_version.as_str(), info.main_path.as_str()),
            ("go1.10", "")
        );
        assert!(parse(b"go\x001", &modinfo("x")).is_err());
    }

    #[test]
    fn hostile_lengths_and_pointers_are_errors() {
        for inline in [false, true] {
            let f = build(&Build {
                inline,
                ..Build::default()
            });
            let start = Elf::parse(&Budget::new(&f[..], 1 << 20))
                .unwrap()
                .section(".go.buildinfo")
                .unwrap()
                .offset as usize;
            for i in start + 14..start + 48 {
                for v in [0u8, 0x7f, 0x80, 0xff] {
                    let mut g = f.clone();
                    g[i] = v;
                    let _ = go(&g);
                }
            }
            for n in 0..f.len() {
                let _ = go(&f[..n]);
            }
        }
        assert_eq!(uvarint(&[0xff; 10]), None);
        assert_eq!(uvarint(&[0x80, 0x01]), Some((128, 2)));
    }
}
