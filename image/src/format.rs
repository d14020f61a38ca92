//! The signed firmware image, byte by byte (documented in `image/FORMAT.md`):
//!
//! ```text
//! signed region   header (512 bytes) + section table (64 bytes per section)
//! signature block 128 bytes: algorithm, key id, Ed25519 signature over the signed region
//! sections        kernel, initramfs, factory configuration: back to back, no gaps
//! ```
//!
//! Every byte of an image is covered: the signed region by the signature, each section
//! by its SHA-256 in the signed table, and the signature block's reserved bytes must be
//! zero. This module lays images out and parses them; it does no hashing and no
//! signing (the firmware does, with its own crypto through the token).

use std::fmt;

/// The first eight bytes of every image.
pub const MAGIC: [u8; 8] = *b"DRWBRIMG";
/// The format this module writes and reads. Version 1: the layout above.
pub const FORMAT_VERSION: u16 = 1;
/// The header's fixed length, before the section table.
pub const HEADER_LEN: usize = 512;
/// One section table entry.
pub const ENTRY_LEN: usize = 64;
/// The signature block that follows the section table.
pub const SIGNATURE_BLOCK_LEN: usize = 128;
/// Most sections in one image: three are defined, the rest is room to grow.
pub const MAX_SECTIONS: usize = 8;

/// Field widths of the header, NUL padded.
pub const BOARD_LEN: usize = 64;
pub const VERSION_LEN: usize = 32;
pub const COMMIT_LEN: usize = 40;
pub const METADATA_LEN: usize = 352;

const BOARD_AT: usize = 16;
const VERSION_AT: usize = BOARD_AT + BOARD_LEN;
const COMMIT_AT: usize = VERSION_AT + VERSION_LEN;
const BUILD_TIME_AT: usize = COMMIT_AT + COMMIT_LEN;
const METADATA_AT: usize = BUILD_TIME_AT + 8;
const _: () = assert!(METADATA_AT + METADATA_LEN == HEADER_LEN);

/// The signature algorithm number of Ed25519 (RFC 8032).
pub const ALGORITHM_ED25519: u16 = 1;
pub const ED25519_SIGNATURE_LEN: usize = 64;
/// A key id is the SHA-256 of the raw 32-byte public key.
pub const KEY_ID_LEN: usize = 32;

/// What a section holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum SectionKind {
    /// The Linux kernel (bzImage), booted as it is.
    Kernel,
    /// A newc cpio archive: the firmware as `/init`, kernel modules, tools.
    Initramfs,
    /// The board's factory configuration, as `set` lines.
    FactoryConfig,
}

impl SectionKind {
    pub const ALL: [SectionKind; 3] = [
        SectionKind::Kernel,
        SectionKind::Initramfs,
        SectionKind::FactoryConfig,
    ];

    pub fn code(self) -> u32 {
        match self {
            SectionKind::Kernel => 1,
            SectionKind::Initramfs => 2,
            SectionKind::FactoryConfig => 3,
        }
    }

    pub fn from_code(code: u32) -> Option<SectionKind> {
        SectionKind::ALL.into_iter().find(|k| k.code() == code)
    }

    pub fn name(self) -> &'static str {
        match self {
            SectionKind::Kernel => "kernel",
            SectionKind::Initramfs => "initramfs",
            SectionKind::FactoryConfig => "factory-config",
        }
    }
}

/// What an image says about itself.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Metadata {
    /// The board compatibility string (`drawbridge,qemu-x86_64`).
    pub board: String,
    /// The firmware version (`0.1.0`).
    pub version: String,
    /// The git commit it was built from, 40 hex digits, or `unknown`.
    pub commit: String,
    /// The build time in Unix seconds: `SOURCE_DATE_EPOCH`, or the commit's time.
    pub build_time: u64,
    /// `key=value` lines: the toolchain, the kernel package, the builder's options.
    pub build: String,
}

/// One section table entry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Section {
    pub kind: SectionKind,
    pub offset: u64,
    pub length: u64,
    pub sha256: [u8; 32],
}

/// The signature block.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Signature {
    pub algorithm: u16,
    pub key_id: [u8; KEY_ID_LEN],
    pub signature: [u8; ED25519_SIGNATURE_LEN],
}

/// A parsed image: its metadata, its sections in table order, and its signature.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Image {
    pub metadata: Metadata,
    pub sections: Vec<Section>,
    pub signature: Signature,
    /// The length of the signed region (header and section table).
    pub signed_len: usize,
}

impl Image {
    /// The section of a kind, if the image has one.
    pub fn section(&self, kind: SectionKind) -> Option<&Section> {
        self.sections.iter().find(|s| s.kind == kind)
    }

    /// A section's bytes within the image it was parsed from.
    pub fn bytes<'a>(&self, image: &'a [u8], section: &Section) -> &'a [u8] {
        // INVARIANT: parse checked that every section lies within the image.
        &image[section.offset as usize..(section.offset + section.length) as usize]
    }
}

/// Why bytes are not a well-formed image.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FormatError {
    TooShort,
    BadMagic,
    /// A format version this firmware does not know.
    UnknownVersion(u16),
    BadSectionCount(u16),
    BadHeaderLength(u32),
    /// A text field with bytes other than printable ASCII, or text after its padding.
    BadText(&'static str),
    /// A reserved field that is not zero.
    Reserved(&'static str),
    UnknownSection(u32),
    DuplicateSection(SectionKind),
    MissingSection(SectionKind),
    /// Sections must follow the signature block and each other with no gap, and end
    /// where the image ends.
    BadLayout,
    UnknownAlgorithm(u16),
}

impl fmt::Display for FormatError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FormatError::TooShort => f.write_str("too short to be an image"),
            FormatError::BadMagic => f.write_str("not a drawbridge image (bad magic)"),
            FormatError::UnknownVersion(v) => write!(f, "image format version {v} is not known"),
            FormatError::BadSectionCount(n) => write!(f, "{n} sections (1 to {MAX_SECTIONS})"),
            FormatError::BadHeaderLength(n) => {
                write!(f, "header length {n} does not match the section count")
            }
            FormatError::BadText(field) => write!(f, "the {field} field is not printable text"),
            FormatError::Reserved(field) => write!(f, "reserved bytes in the {field} are not zero"),
            FormatError::UnknownSection(code) => write!(f, "unknown section kind {code}"),
            FormatError::DuplicateSection(k) => write!(f, "two {} sections", k.name()),
            FormatError::MissingSection(k) => write!(f, "no {} section", k.name()),
            FormatError::BadLayout => {
                f.write_str("sections do not follow each other up to the end of the image")
            }
            FormatError::UnknownAlgorithm(a) => write!(f, "unknown signature algorithm {a}"),
        }
    }
}

impl std::error::Error for FormatError {}

// INVARIANT: the readers below are called with offsets inside a slice whose length
// `parse` checked first, and every fixed-width `try_into` converts a slice of exactly
// that width.
fn u16_at(b: &[u8], at: usize) -> u16 {
    u16::from_le_bytes([b[at], b[at + 1]])
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().expect("4 bytes"))
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().expect("8 bytes"))
}

/// A NUL-padded text field: printable ASCII (and newlines in the metadata), then only NULs.
fn text(field: &[u8], name: &'static str, newlines: bool) -> Result<String, FormatError> {
    let end = field.iter().position(|&b| b == 0).unwrap_or(field.len());
    let (body, padding) = field.split_at(end);
    let ok = |b: &u8| b.is_ascii_graphic() || *b == b' ' || (newlines && *b == b'\n');
    if !body.iter().all(ok) || padding.iter().any(|&b| b != 0) {
        return Err(FormatError::BadText(name));
    }
    Ok(String::from_utf8_lossy(body).into_owned())
}

fn put_text(out: &mut [u8], value: &str) -> Result<(), LayoutError> {
    if value.len() > out.len() {
        return Err(LayoutError::TooLong(value.len(), out.len()));
    }
    if !value
        .bytes()
        .all(|b| b.is_ascii_graphic() || b == b' ' || b == b'\n')
    {
        return Err(LayoutError::NotText);
    }
    out[..value.len()].copy_from_slice(value.as_bytes());
    Ok(())
}

/// The signed region's length for `n` sections.
pub fn signed_len(n: usize) -> usize {
    HEADER_LEN + n * ENTRY_LEN
}

/// Parses an image's header, section table and signature block, and checks that the
/// sections tile the rest of `image` exactly. Hashes and signature are not checked here.
pub fn parse(image: &[u8]) -> Result<Image, FormatError> {
    if image.len() < HEADER_LEN {
        return Err(FormatError::TooShort);
    }
    if image[..8] != MAGIC {
        return Err(FormatError::BadMagic);
    }
    let version = u16_at(image, 8);
    if version != FORMAT_VERSION {
        return Err(FormatError::UnknownVersion(version));
    }
    let count = u16_at(image, 10);
    if count == 0 || usize::from(count) > MAX_SECTIONS {
        return Err(FormatError::BadSectionCount(count));
    }
    let len = u32_at(image, 12);
    let signed = signed_len(usize::from(count));
    if len as usize != signed {
        return Err(FormatError::BadHeaderLength(len));
    }
    if image.len() < signed + SIGNATURE_BLOCK_LEN {
        return Err(FormatError::TooShort);
    }
    let metadata = Metadata {
        board: text(&image[BOARD_AT..VERSION_AT], "board", false)?,
        version: text(&image[VERSION_AT..COMMIT_AT], "version", false)?,
        commit: text(&image[COMMIT_AT..BUILD_TIME_AT], "commit", false)?,
        build_time: u64_at(image, BUILD_TIME_AT),
        build: text(&image[METADATA_AT..HEADER_LEN], "build metadata", true)?,
    };
    if metadata.board.is_empty() {
        return Err(FormatError::BadText("board"));
    }
    let mut sections: Vec<Section> = Vec::new();
    let mut next = (signed + SIGNATURE_BLOCK_LEN) as u64;
    for i in 0..usize::from(count) {
        let e = &image[HEADER_LEN + i * ENTRY_LEN..HEADER_LEN + (i + 1) * ENTRY_LEN];
        let code = u32_at(e, 0);
        let kind = SectionKind::from_code(code).ok_or(FormatError::UnknownSection(code))?;
        if sections.iter().any(|s| s.kind == kind) {
            return Err(FormatError::DuplicateSection(kind));
        }
        if u32_at(e, 4) != 0 || e[56..].iter().any(|&b| b != 0) {
            return Err(FormatError::Reserved("section table"));
        }
        let (offset, length) = (u64_at(e, 8), u64_at(e, 16));
        if offset != next {
            return Err(FormatError::BadLayout);
        }
        next = offset.checked_add(length).ok_or(FormatError::BadLayout)?;
        sections.push(Section {
            kind,
            offset,
            length,
            sha256: e[24..56].try_into().expect("32 bytes"),
        });
    }
    if next != image.len() as u64 {
        return Err(FormatError::BadLayout);
    }
    for kind in SectionKind::ALL {
        if !sections.iter().any(|s| s.kind == kind) {
            return Err(FormatError::MissingSection(kind));
        }
    }
    let s = &image[signed..signed + SIGNATURE_BLOCK_LEN];
    let algorithm = u16_at(s, 0);
    if algorithm != ALGORITHM_ED25519 {
        return Err(FormatError::UnknownAlgorithm(algorithm));
    }
    if s[2..8].iter().any(|&b| b != 0) || s[104..].iter().any(|&b| b != 0) {
        return Err(FormatError::Reserved("signature block"));
    }
    Ok(Image {
        metadata,
        sections,
        signature: Signature {
            algorithm,
            key_id: s[8..40].try_into().expect("32 bytes"),
            signature: s[40..104].try_into().expect("64 bytes"),
        },
        signed_len: signed,
    })
}

/// Why an image cannot be laid out.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LayoutError {
    /// A text of this many bytes for a field of that many.
    TooLong(usize, usize),
    NotText,
    /// Each kind exactly once.
    Sections,
}

impl fmt::Display for LayoutError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LayoutError::TooLong(n, max) => write!(f, "a header text of {n} bytes (at most {max})"),
            LayoutError::NotText => f.write_str("a header text that is not printable ASCII"),
            LayoutError::Sections => {
                f.write_str("an image has one kernel, one initramfs and one factory configuration")
            }
        }
    }
}

impl std::error::Error for LayoutError {}

/// Lays out an unsealed image: header, table with zero hashes, a signature block naming
/// Ed25519 with zero key id and signature, then the sections in the order given.
/// Sealing fills in the hashes and the signature ([`set_hash`], [`set_signature`]).
pub fn assemble(
    metadata: &Metadata,
    sections: &[(SectionKind, &[u8])],
) -> Result<Vec<u8>, LayoutError> {
    let mut kinds: Vec<SectionKind> = sections.iter().map(|(k, _)| *k).collect();
    kinds.sort();
    if kinds != SectionKind::ALL {
        return Err(LayoutError::Sections);
    }
    let signed = signed_len(sections.len());
    let mut out = vec![0u8; signed + SIGNATURE_BLOCK_LEN];
    out[..8].copy_from_slice(&MAGIC);
    out[8..10].copy_from_slice(&FORMAT_VERSION.to_le_bytes());
    out[10..12].copy_from_slice(&(sections.len() as u16).to_le_bytes());
    out[12..16].copy_from_slice(&(signed as u32).to_le_bytes());
    if metadata.board.is_empty() {
        return Err(LayoutError::NotText);
    }
    put_text(&mut out[BOARD_AT..VERSION_AT], &metadata.board)?;
    put_text(&mut out[VERSION_AT..COMMIT_AT], &metadata.version)?;
    put_text(&mut out[COMMIT_AT..BUILD_TIME_AT], &metadata.commit)?;
    out[BUILD_TIME_AT..METADATA_AT].copy_from_slice(&metadata.build_time.to_le_bytes());
    put_text(&mut out[METADATA_AT..HEADER_LEN], &metadata.build)?;
    let mut offset = out.len() as u64;
    for (i, (kind, bytes)) in sections.iter().enumerate() {
        let e = &mut out[HEADER_LEN + i * ENTRY_LEN..HEADER_LEN + (i + 1) * ENTRY_LEN];
        e[0..4].copy_from_slice(&kind.code().to_le_bytes());
        e[8..16].copy_from_slice(&offset.to_le_bytes());
        e[16..24].copy_from_slice(&(bytes.len() as u64).to_le_bytes());
        offset += bytes.len() as u64;
    }
    out[signed..signed + 2].copy_from_slice(&ALGORITHM_ED25519.to_le_bytes());
    for (_, bytes) in sections {
        out.extend_from_slice(bytes);
    }
    Ok(out)
}

/// Writes the SHA-256 of the section at table index `index`.
pub fn set_hash(image: &mut [u8], index: usize, sha256: &[u8; 32]) {
    let at = HEADER_LEN + index * ENTRY_LEN + 24;
    image[at..at + 32].copy_from_slice(sha256);
}

/// Writes the signature block of an image whose signed region is `signed_len` long.
pub fn set_signature(
    image: &mut [u8],
    signed_len: usize,
    key_id: &[u8; KEY_ID_LEN],
    signature: &[u8; ED25519_SIGNATURE_LEN],
) {
    image[signed_len + 8..signed_len + 40].copy_from_slice(key_id);
    image[signed_len + 40..signed_len + 104].copy_from_slice(signature);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta() -> Metadata {
        Metadata {
            board: "drawbridge,qemu-x86_64".into(),
            version: "0.1.0".into(),
            commit: "4b9d32e".into(),
            build_time: 1_700_000_000,
            build: "rustc=1.85\nkernel=linux-image-6.1\n".into(),
        }
    }

    fn sample() -> Vec<u8> {
        assemble(
            &meta(),
            &[
                (SectionKind::Kernel, b"kernel bytes"),
                (SectionKind::Initramfs, b"070701..."),
                (SectionKind::FactoryConfig, b"set system host-name x\n"),
            ],
        )
        .unwrap()
    }

    #[test]
    fn assembles_and_parses_back() {
        let mut bytes = sample();
        set_hash(&mut bytes, 1, &[7; 32]);
        set_signature(&mut bytes, signed_len(3), &[1; 32], &[2; 64]);
        let image = parse(&bytes).unwrap();
        assert_eq!(image.metadata, meta());
        assert_eq!(image.signed_len, 512 + 3 * 64);
        assert_eq!(image.sections[0].offset, (512 + 3 * 64 + 128) as u64);
        assert_eq!(image.sections[1].sha256, [7; 32]);
        let kernel = image.section(SectionKind::Kernel).unwrap();
        assert_eq!(image.bytes(&bytes, kernel), b"kernel bytes");
        assert_eq!(image.signature.key_id, [1; 32]);
        assert_eq!(image.signature.signature, [2; 64]);
    }

    #[test]
    fn layout_refuses_bad_fields_and_section_sets() {
        let mut m = meta();
        m.board = "x".repeat(BOARD_LEN + 1);
        assert!(assemble(&m, &[]).is_err());
        let mut m = meta();
        m.version = "1.0\u{1}".into();
        let s: [(SectionKind, &[u8]); 3] = [
            (SectionKind::Kernel, b""),
            (SectionKind::Initramfs, b""),
            (SectionKind::FactoryConfig, b""),
        ];
        assert_eq!(assemble(&m, &s), Err(LayoutError::NotText));
        assert_eq!(assemble(&meta(), &s[..2]), Err(LayoutError::Sections));
        let twice = [s[0], s[0], s[1], s[2]];
        assert_eq!(assemble(&meta(), &twice), Err(LayoutError::Sections));
    }

    #[test]
    fn malformed_images_are_named() {
        let good = sample();
        let with = |at: usize, byte: u8| {
            let mut b = good.clone();
            b[at] = byte;
            parse(&b)
        };
        assert_eq!(with(0, b'X'), Err(FormatError::BadMagic));
        assert_eq!(with(8, 2), Err(FormatError::UnknownVersion(2)));
        assert_eq!(with(10, 0), Err(FormatError::BadSectionCount(0)));
        assert_eq!(with(10, 9), Err(FormatError::BadSectionCount(9)));
        assert_eq!(with(10, 2), Err(FormatError::BadHeaderLength(704)));
        assert_eq!(
            with(BOARD_AT + 60, b'x'),
            Err(FormatError::BadText("board"))
        );
        assert_eq!(with(BOARD_AT, 0), Err(FormatError::BadText("board")));
        assert_eq!(with(HEADER_LEN, 9), Err(FormatError::UnknownSection(9)));
        assert_eq!(
            with(HEADER_LEN, 2),
            Err(FormatError::DuplicateSection(SectionKind::Initramfs))
        );
        assert_eq!(
            with(HEADER_LEN + 4, 1),
            Err(FormatError::Reserved("section table"))
        );
        assert_eq!(with(HEADER_LEN + 8, 0), Err(FormatError::BadLayout));
        assert_eq!(
            with(signed_len(3), 2),
            Err(FormatError::UnknownAlgorithm(2))
        );
        assert_eq!(
            with(signed_len(3) + 120, 1),
            Err(FormatError::Reserved("signature block"))
        );
        let mut longer = good.clone();
        longer.push(0);
        assert_eq!(parse(&longer), Err(FormatError::BadLayout));
        for cut in 0..good.len() {
            assert!(parse(&good[..cut]).is_err(), "cut at {cut}");
        }
    }

    #[test]
    fn flipped_bits_never_panic() {
        let good = sample();
        for i in 0..signed_len(3) + SIGNATURE_BLOCK_LEN {
            for bit in 0..8 {
                let mut b = good.clone();
                b[i] ^= 1 << bit;
                let _ = parse(&b);
            }
        }
    }
}
