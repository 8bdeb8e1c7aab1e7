//! Test-only builder of small synthetic ELF files carrying Go build info in
//! every variant the parser supports (32/64-bit, either byte order, inline
//! or pointer strings, with or without section headers), so each variant
//! is tested without a cross toolchain. Also writes the fixtures under
//! `tests/data/identity/` (see `write_fixtures`).

/// What to build; the default is a 64-bit little-endian Go ≥ 1.18 binary
/// whose main package is `github.com/docker/cli/cmd/docker`.
pub struct Build {
    pub is_64: bool,
    pub big: bool,
    pub inline: bool,
    pub no_sections: bool,
    pub section_name: &'static str,
    pub main: &'static str,
}

impl Default for Build {
    fn default() -> Self {
        Build {
            is_64: true,
            big: false,
            inline: true,
            no_sections: false,
            section_name: ".go.buildinfo",
            main: "github.com/docker/cli/cmd/docker",
        }
    }
}

const BLOB_OFF: usize = 0x100;
const VBASE: u64 = 0x40_0000;

/// The module info string with its two 16-byte sentinels.
pub fn modinfo(main: &str) -> Vec<u8> {
    let mut v = b"0w\xaf\x0c\x92t\x08\x02A\xe1\xc1\x07\xe6\xd6\x18\xe6".to_vec();
    v.extend_from_slice(
        format!(
            "path\t{main}\nmod\tgithub.com/docker/cli\t(devel)\t\n\
             dep\tgolang.org/x/sys\tv0.1.0\th1:abc=\n=>\t../local\t\t\n\
             build\t-compiler=gc\n"
        )
        .as_bytes(),
    );
    v.extend_from_slice(b"\xf92C1\x86\x18 r\x00\x82B\x10A\x16\xd8\xf2");
    v
}

fn put(buf: &mut Vec<u8>, at: usize, v: u64, width: usize, big: bool) {
    if buf.len() < at + width {
        buf.resize(at + width, 0);
    }
    for i in 0..width {
        let shift = 8 * if big { width - 1 - i } else { i };
        buf[at + i] = (v >> shift) as u8;
    }
}

fn varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn blob(b: &Build) -> Vec<u8> {
    let ps = if b.is_64 { 8 } else { 4 };
    let version = b"go1.22.1";
    let mi = modinfo(b.main);
    let mut x = b"\xff Go buildinf:".to_vec();
    x.push(ps as u8);
    x.push(u8::from(b.big) | if b.inline { 2 } else { 0 });
    x.resize(32, 0);
    if b.inline {
        varint(&mut x, version.len() as u64);
        x.extend_from_slice(version);
        varint(&mut x, mi.len() as u64);
        x.extend_from_slice(&mi);
    } else {
        let va = |off: usize| VBASE + (BLOB_OFF + off) as u64;
        let (h1, h2, data) = (32, 32 + 2 * ps, 64);
        put(&mut x, 16, va(h1), ps, b.big);
        put(&mut x, 16 + ps, va(h2), ps, b.big);
        put(&mut x, h1, va(data), ps, b.big);
        put(&mut x, h1 + ps, version.len() as u64, ps, b.big);
        put(&mut x, h2, va(data + version.len()), ps, b.big);
        put(&mut x, h2 + ps, mi.len() as u64, ps, b.big);
        x.resize(data, 0);
        x.extend_from_slice(version);
        x.extend_from_slice(&mi);
    }
    x
}

/// The whole file.
pub fn build(b: &Build) -> Vec<u8> {
    let (big, w) = (b.big, if b.is_64 { 8 } else { 4 });
    let data = blob(b);
    let mut f = vec![0u8; BLOB_OFF];
    f[..4].copy_from_slice(b"\x7fELF");
    f[4] = if b.is_64 { 2 } else { 1 };
    f[5] = if big { 2 } else { 1 };
    f[6] = 1;
    put(&mut f, 16, 2, 2, big); // ET_EXEC
    let (ehsize, phent, shent) = if b.is_64 { (64, 56, 64) } else { (52, 32, 40) };
    let phoff = 0x40;
    // One loadable, writable segment holding the blob.
    let p = |f: &mut Vec<u8>, at: usize, v: u64, width| put(f, phoff + at, v, width, big);
    p(&mut f, 0, 1, 4);
    if b.is_64 {
        p(&mut f, 4, 6, 4);
        p(&mut f, 8, BLOB_OFF as u64, 8);
        p(&mut f, 16, VBASE + BLOB_OFF as u64, 8);
        p(&mut f, 32, data.len() as u64, 8);
        p(&mut f, 40, data.len() as u64, 8);
    } else {
        p(&mut f, 4, BLOB_OFF as u64, 4);
        p(&mut f, 8, VBASE + BLOB_OFF as u64, 4);
        p(&mut f, 16, data.len() as u64, 4);
        p(&mut f, 20, data.len() as u64, 4);
        p(&mut f, 24, 6, 4);
    }
    f.extend_from_slice(&data);
    let strtab_off = f.len();
    let names = format!("\0{}\0.shstrtab\0", b.section_name);
    f.extend_from_slice(names.as_bytes());
    while !f.len().is_multiple_of(8) {
        f.push(0);
    }
    let shoff = f.len();
    // null, the named section, .shstrtab
    let secs: [(u64, u64, u64, u64, u64); 3] = [
        (0, 0, 0, 0, 0),
        (
            1,
            1,
            VBASE + BLOB_OFF as u64,
            BLOB_OFF as u64,
            data.len() as u64,
        ),
        (
            (b.section_name.len() + 2) as u64,
            3,
            0,
            strtab_off as u64,
            names.len() as u64,
        ),
    ];
    for (i, (name, ty, addr, off, size)) in secs.iter().enumerate() {
        let at = shoff + i * shent;
        put(&mut f, at, *name, 4, big);
        put(&mut f, at + 4, *ty, 4, big);
        put(&mut f, at + 8 + w, *addr, w, big);
        put(&mut f, at + 8 + 2 * w, *off, w, big);
        put(&mut f, at + 8 + 3 * w, *size, w, big);
        f.resize(at + shent, 0);
    }
    let (l_phoff, l_shoff, l_rest) = if b.is_64 {
        (0x20, 0x28, 0x34)
    } else {
        (0x1c, 0x20, 0x28)
    };
    put(&mut f, l_phoff, phoff as u64, w, big);
    if !b.no_sections {
        put(&mut f, l_shoff, shoff as u64, w, big);
    }
    let rest = [
        ehsize,
        phent,
        1,
        shent,
        if b.no_sections { 0 } else { 3 },
        2,
    ];
    for (i, v) in rest.iter().enumerate() {
        put(&mut f, l_rest + 2 * i, *v as u64, 2, big);
    }
    f
}

/// `cargo test --lib write_fixtures -- --ignored` regenerates the files
/// in `tests/data/identity/` that the integration tests read.
#[test]
#[ignore]
fn write_fixtures() {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/identity");
    std::fs::create_dir_all(dir).unwrap();
    let w = |name: &str, data: &[u8]| std::fs::write(format!("{dir}/{name}"), data).unwrap();
    w("go-le64-inline.elf", &build(&Build::default()));
    let be32 = Build {
        is_64: false,
        big: true,
        inline: false,
        ..Build::default()
    };
    w("go-be32-pointer.elf", &build(&be32));
    let kubectl = Build {
        main: "k8s.io/kubernetes/cmd/kubectl",
        no_sections: true,
        ..Build::default()
    };
    w("go-kubectl-no-sections.elf", &build(&kubectl));
    w(
        "not-go.elf",
        &build(&Build {
            section_name: ".data",
            ..Build::default()
        }),
    );
    let full = build(&Build::default());
    w("truncated.elf", &full[..BLOB_OFF + 40]);
    // Section table claimed far past the end, string length of 2^62.
    let mut hostile = full.clone();
    put(&mut hostile, 0x28, u64::MAX - 8, 8, false);
    w("hostile-shoff.elf", &hostile);
    let mut hostile = full;
    hostile[BLOB_OFF + 32..BLOB_OFF + 42]
        .copy_from_slice(&[0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x3f]);
    w("hostile-length.elf", &hostile);
}
