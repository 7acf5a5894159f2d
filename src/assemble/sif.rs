//! SIF (Singularity Image Format) files, written from scratch and byte-reproducibly.
//!
//! A SIF file is a 128-byte global header, zeros up to byte 4096, a table of 48 fixed-size
//! (585-byte) descriptors, and then the data objects the used descriptors point at. All integers
//! are little-endian and the structs are packed, as Go's `encoding/binary` writes them. kiln
//! writes what `singularity build` writes, in the same order: the definition file
//! (`Def.FILE`), the JSON objects sorted by name (`inspect-metadata.json`, then
//! `oci-config.json` when there is one), and the squashfs root file system as the primary system
//! partition, aligned to 4096 bytes. Every object is in group 1; nothing is linked.
//!
//! The byte layout, field by field, is in the project's Singularity reference
//! (`/work/shared/reference/singularity.md` §4, read from sylabs/sif v2 `pkg/sif`; the squashfs
//! options are in §5.4). Nothing here is random or reads the clock: the caller gives the
//! container UUID and the timestamp, so the same inputs give the same file.

use std::fs::{self, File};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use sha2::{Digest as _, Sha256};

use super::AssembleError;
use super::files::{HashWriter, TempFile};
use crate::spec::Platform;

/// The launch script singularity puts in the header, so `./image.sif` runs the container.
const LAUNCH_SCRIPT: &[u8] = b"#!/usr/bin/env run-singularity\n";
/// The header magic, NUL included.
const MAGIC: &[u8; 10] = b"SIF_MAGIC\0";
/// The only format version readers accept.
const VERSION: &[u8; 3] = b"01\0";
/// Size of the packed global header.
const HEADER_LEN: usize = 128;
/// Where the descriptor table starts (sif's default).
const DESCRIPTORS_OFFSET: u64 = 4096;
/// Number of descriptor slots (sif's default); unused slots are all zero.
const DESCRIPTOR_CAPACITY: u64 = 48;
/// The most descriptors [`read_descriptors`] reads from a file (any writer's), which bounds the
/// table it allocates: about 600 KB.
pub const MAX_DESCRIPTORS: i64 = 1024;
/// Size of one packed descriptor.
const DESCRIPTOR_LEN: usize = 585;
/// Size of the descriptor table.
const DESCRIPTORS_SIZE: u64 = DESCRIPTOR_CAPACITY * DESCRIPTOR_LEN as u64;
/// Where data objects start: right after the descriptor table.
const DATA_OFFSET: u64 = DESCRIPTORS_OFFSET + DESCRIPTORS_SIZE;
/// Partitions are aligned to this; other objects are packed without padding.
const PARTITION_ALIGN: u64 = 4096;
/// Length of a descriptor's name field.
const NAME_LEN: usize = 128;
/// Length of a descriptor's type-specific `Extra` field.
const EXTRA_LEN: usize = 384;
/// The default object group (1), as stored: the group number with the high nibble set.
const DEFAULT_GROUP: u32 = 0xf000_0001;
/// Partition file system type: squashfs.
const FS_SQUASH: i32 = 1;
/// Partition type: primary system partition (the root file system the runtime mounts).
const PART_PRIM_SYS: i32 = 2;
/// The descriptor name singularity gives the inspect metadata.
const INSPECT_NAME: &str = "inspect-metadata.json";
/// The descriptor name singularity gives the OCI image config.
const OCI_CONFIG_NAME: &str = "oci-config.json";
/// The squashfs superblock magic, `hsqs`.
const SQUASHFS_MAGIC: &[u8; 4] = b"hsqs";
/// squashfs compression id for gzip.
const SQUASHFS_GZIP: u16 = 1;
/// Buffer for streaming the squashfs in: large, so a multi-gigabyte image costs few syscalls.
const COPY_BUFFER: usize = 1 << 20;

/// The CPU architecture recorded in the header and the partition descriptor; singularity refuses
/// to run a partition whose architecture the host cannot run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SifArch {
    /// x86_64, Go's `amd64`.
    Amd64,
    /// aarch64, Go's `arm64`.
    Arm64,
}

impl SifArch {
    /// The Go architecture name, as `siftool` prints it.
    pub fn as_str(self) -> &'static str {
        match self {
            SifArch::Amd64 => "amd64",
            SifArch::Arm64 => "arm64",
        }
    }

    /// The on-disk code: two ASCII digits and a NUL (`sif`'s `arch.go` table).
    pub fn code(self) -> [u8; 3] {
        match self {
            SifArch::Amd64 => *b"02\0",
            SifArch::Arm64 => *b"04\0",
        }
    }
}

impl SifArch {
    /// The architecture in a SIF's global header (its first 48 bytes), if they are a SIF's.
    pub fn of_header(header: &[u8]) -> Option<SifArch> {
        let magic_at = LAUNCH_SCRIPT_FIELD;
        let arch_at = magic_at + MAGIC.len() + VERSION.len();
        if header.get(magic_at..magic_at + MAGIC.len()) != Some(MAGIC.as_slice()) {
            return None;
        }
        match header.get(arch_at..arch_at + 3)? {
            b"02\0" => Some(SifArch::Amd64),
            b"04\0" => Some(SifArch::Arm64),
            _ => None,
        }
    }
}

/// Bytes the launch script field takes at the start of the header.
const LAUNCH_SCRIPT_FIELD: usize = 32;

impl From<Platform> for SifArch {
    fn from(platform: Platform) -> Self {
        match platform {
            Platform::LinuxAmd64 => SifArch::Amd64,
            Platform::LinuxArm64 => SifArch::Arm64,
        }
    }
}

/// The kinds of data object kiln writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SifDataType {
    /// `DataDeffile` (`Def.FILE`): the definition file.
    Definition,
    /// `DataGenericJSON` (`JSON.Generic`): inspect metadata and the OCI config.
    GenericJson,
    /// `DataPartition` (`FS`): the squashfs root file system.
    Partition,
}

impl SifDataType {
    /// The on-disk `DataType` value.
    pub fn code(self) -> i32 {
        match self {
            SifDataType::Definition => 0x4001,
            SifDataType::GenericJson => 0x4006,
            SifDataType::Partition => 0x4004,
        }
    }
}

/// What goes into a SIF file. Everything that would otherwise be random or the current time is
/// given here, so the output depends on these fields alone.
#[derive(Debug, Clone, Copy)]
pub struct SifInput<'a> {
    /// The container UUID (RFC 4122 byte order), e.g. [`uuid_from`] of the build key.
    pub id: [u8; 16],
    /// Unix seconds, used for every timestamp in the header and the descriptors.
    pub created: i64,
    /// The architecture of the root file system.
    pub arch: SifArch,
    /// The definition file text, stored verbatim as the `Def.FILE` object.
    pub definition: &'a [u8],
    /// `inspect-metadata.json`: the `{"data":{"attributes":…},"type":"container"}` document
    /// `singularity inspect` reads instead of mounting the image. Stored verbatim.
    pub inspect: &'a [u8],
    /// `oci-config.json`: the OCI image config's `config` object (`Env`, `Cmd`, …), which
    /// singularity keeps for images built from OCI sources. Stored verbatim when given.
    pub oci_config: Option<&'a [u8]>,
    /// The squashfs root file system (gzip-compressed), streamed into the primary partition.
    pub squashfs: &'a Path,
}

/// One data object in a written SIF file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SifObject {
    /// The object ID (1-based descriptor slot), as `siftool info`/`dump` take it.
    pub id: u32,
    /// What the object is.
    pub data_type: SifDataType,
    /// The descriptor name (empty for the definition and the partition, as singularity writes).
    pub name: &'static str,
    /// Byte offset of the object in the file.
    pub offset: u64,
    /// Size of the object in bytes.
    pub size: u64,
}

/// A written SIF file: its digest and size (computed while writing) and its objects.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SifSummary {
    /// Hex sha256 of the whole file.
    pub sha256: String,
    /// Size of the file in bytes.
    pub size: u64,
    /// The data objects, in descriptor order.
    pub objects: Vec<SifObject>,
}

/// A failure while writing a SIF file. Messages name the path concerned.
#[derive(Debug, thiserror::Error)]
pub enum SifError {
    /// A file-system operation failed.
    #[error("could not {action} {}", path.display())]
    Io {
        /// What was being done, as a verb phrase ("read", "write", ...).
        action: &'static str,
        /// The path concerned.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// Creating or renaming the temporary output file failed.
    #[error(transparent)]
    Output(#[from] AssembleError),
    /// The partition input does not start with a squashfs superblock.
    #[error("{} is not a squashfs image (no `hsqs` superblock)", path.display())]
    NotSquashfs {
        /// The path concerned.
        path: PathBuf,
    },
    /// The squashfs is not gzip-compressed. SingularityCE rejects zstd images as corrupt, and
    /// kernels and squashfuse builds differ in what else they read; gzip works everywhere.
    #[error(
        "{} uses squashfs compression {compression}; SIF images need gzip (`mksquashfs -comp gzip`)",
        path.display()
    )]
    Compression {
        /// The path concerned.
        path: PathBuf,
        /// The compression's name, or its id when unknown.
        compression: String,
    },
    /// The squashfs changed size while it was being copied.
    #[error("{} changed while it was being copied into the SIF file", path.display())]
    Changed {
        /// The path concerned.
        path: PathBuf,
    },
}

fn io_err(action: &'static str, path: &Path) -> impl FnOnce(io::Error) -> SifError {
    let path = path.to_path_buf();
    move |source| SifError::Io {
        action,
        path,
        source,
    }
}

/// A container UUID derived from `bytes` (e.g. the build key): the first 16 bytes of their
/// sha256, with the RFC 9562 variant bits and version 8 ("custom", the version for
/// name-based UUIDs that use a hash other than MD5 or SHA-1). Same bytes, same UUID.
pub fn uuid_from(bytes: &[u8]) -> [u8; 16] {
    let digest = Sha256::digest(bytes);
    let mut id = [0u8; 16];
    id.copy_from_slice(&digest[..16]);
    id[6] = (id[6] & 0x0f) | 0x80;
    id[8] = (id[8] & 0x3f) | 0x80;
    id
}

/// Writes `input` as a SIF file at `out` and returns its sha256, size and objects.
///
/// The file is written under a temporary name in `out`'s directory, made executable (0755, so
/// `./image.sif` works through the launch script) and renamed into place, so readers never see
/// a partial file. The squashfs is streamed, not read into memory, and the whole file is hashed
/// as it is written. The same input always gives the same bytes.
pub fn write_sif(input: &SifInput<'_>, out: &Path) -> Result<SifSummary, SifError> {
    let mut squashfs = File::open(input.squashfs).map_err(io_err("open", input.squashfs))?;
    let squashfs_size = check_squashfs(&mut squashfs, input.squashfs)?;

    let objects = plan(input, squashfs_size);
    let prefix = prefix(input, &objects);

    let dir = match out.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent,
        _ => Path::new("."),
    };
    let (tmp, file) = TempFile::create(dir)?;
    let mut writer = HashWriter::new(file);
    writer
        .write_all(&prefix)
        .map_err(io_err("write", &tmp.path))?;
    copy_exact(
        &mut squashfs,
        input.squashfs,
        squashfs_size,
        &mut writer,
        &tmp.path,
    )?;
    let (file, sha256, size) = writer.finish();
    file.set_permissions(fs::Permissions::from_mode(0o755))
        .map_err(io_err("set permissions on", &tmp.path))?;
    file.sync_all().map_err(io_err("sync", &tmp.path))?;
    drop(file);
    tmp.persist(out)?;

    Ok(SifSummary {
        sha256,
        size,
        objects: objects.into_iter().map(|o| o.object).collect(),
    })
}

/// Checks the squashfs superblock (magic and gzip compression) and returns the file's size, with
/// the file positioned back at its start.
fn check_squashfs(file: &mut File, path: &Path) -> Result<u64, SifError> {
    let size = file.metadata().map_err(io_err("stat", path))?.len();
    let mut superblock = [0u8; 24];
    match file.read_exact(&mut superblock) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => {
            return Err(SifError::NotSquashfs {
                path: path.to_path_buf(),
            });
        }
        Err(e) => return Err(io_err("read", path)(e)),
    }
    if &superblock[..4] != SQUASHFS_MAGIC {
        return Err(SifError::NotSquashfs {
            path: path.to_path_buf(),
        });
    }
    let compression = u16::from_le_bytes([superblock[20], superblock[21]]);
    if compression != SQUASHFS_GZIP {
        let name = match compression {
            2 => "lzma".to_owned(),
            3 => "lzo".to_owned(),
            4 => "xz".to_owned(),
            5 => "lz4".to_owned(),
            6 => "zstd".to_owned(),
            other => format!("id {other}"),
        };
        return Err(SifError::Compression {
            path: path.to_path_buf(),
            compression: name,
        });
    }
    file.seek(SeekFrom::Start(0))
        .map_err(io_err("read", path))?;
    Ok(size)
}

/// Copies exactly `size` bytes of `src` into `out`; fails if the file turns out shorter or
/// longer, since the descriptors already record `size`.
fn copy_exact<W: Write>(
    src: &mut File,
    src_path: &Path,
    size: u64,
    out: &mut W,
    out_path: &Path,
) -> Result<(), SifError> {
    let mut buf = vec![0u8; COPY_BUFFER];
    let mut left = size;
    loop {
        let n = src.read(&mut buf).map_err(io_err("read", src_path))?;
        if n == 0 {
            break;
        }
        let n64 = n as u64;
        if n64 > left {
            return Err(SifError::Changed {
                path: src_path.to_path_buf(),
            });
        }
        out.write_all(&buf[..n])
            .map_err(io_err("write", out_path))?;
        left -= n64;
    }
    if left != 0 {
        return Err(SifError::Changed {
            path: src_path.to_path_buf(),
        });
    }
    Ok(())
}

/// A data object with where it goes and what its descriptor holds besides.
struct Planned<'a> {
    object: SifObject,
    /// Alignment padding before the object plus its size (`SizeWithPadding`).
    size_with_padding: u64,
    /// The bytes, for objects written from memory; `None` for the streamed partition.
    bytes: Option<&'a [u8]>,
    /// The descriptor's `Extra` field, before NUL padding.
    extra: Vec<u8>,
}

/// Lays the objects out as singularity does: definition, JSON objects by name, then the
/// partition at the next 4096-byte boundary. IDs are slot index + 1.
fn plan<'a>(input: &SifInput<'a>, squashfs_size: u64) -> Vec<Planned<'a>> {
    let mut in_memory = vec![(SifDataType::Definition, "", input.definition)];
    in_memory.push((SifDataType::GenericJson, INSPECT_NAME, input.inspect));
    if let Some(config) = input.oci_config {
        in_memory.push((SifDataType::GenericJson, OCI_CONFIG_NAME, config));
    }

    let mut objects = Vec::with_capacity(in_memory.len() + 1);
    let mut end = DATA_OFFSET;
    let mut id = 1;
    for (data_type, name, bytes) in in_memory {
        let size = bytes.len() as u64;
        objects.push(Planned {
            object: SifObject {
                id,
                data_type,
                name,
                offset: end,
                size,
            },
            size_with_padding: size,
            bytes: Some(bytes),
            extra: Vec::new(),
        });
        end += size;
        id += 1;
    }

    let offset = end.next_multiple_of(PARTITION_ALIGN);
    let mut extra = Vec::with_capacity(11);
    extra.extend_from_slice(&FS_SQUASH.to_le_bytes());
    extra.extend_from_slice(&PART_PRIM_SYS.to_le_bytes());
    extra.extend_from_slice(&input.arch.code());
    objects.push(Planned {
        object: SifObject {
            id,
            data_type: SifDataType::Partition,
            name: "",
            offset,
            size: squashfs_size,
        },
        size_with_padding: offset - end + squashfs_size,
        bytes: None,
        extra,
    });
    objects
}

/// Everything before the partition: header, zero padding, descriptor table, the in-memory
/// objects and the zeros that align the partition.
fn prefix(input: &SifInput<'_>, objects: &[Planned<'_>]) -> Vec<u8> {
    let data_size: u64 = objects.iter().map(|o| o.size_with_padding).sum();
    let partition_offset = objects
        .last()
        .map_or(DATA_OFFSET, |partition| partition.object.offset);
    let mut buf = Vec::with_capacity(usize::try_from(partition_offset).unwrap_or_default());

    // Global header.
    put_padded(&mut buf, LAUNCH_SCRIPT, LAUNCH_SCRIPT_FIELD);
    buf.extend_from_slice(MAGIC);
    buf.extend_from_slice(VERSION);
    buf.extend_from_slice(&input.arch.code());
    buf.extend_from_slice(&input.id);
    buf.extend_from_slice(&input.created.to_le_bytes()); // CreatedAt
    buf.extend_from_slice(&input.created.to_le_bytes()); // ModifiedAt
    put_u64(&mut buf, DESCRIPTOR_CAPACITY - objects.len() as u64); // DescriptorsFree
    put_u64(&mut buf, DESCRIPTOR_CAPACITY); // DescriptorsTotal
    put_u64(&mut buf, DESCRIPTORS_OFFSET);
    put_u64(&mut buf, DESCRIPTORS_SIZE);
    put_u64(&mut buf, DATA_OFFSET);
    put_u64(&mut buf, data_size);
    debug_assert_eq!(buf.len(), HEADER_LEN);
    pad_to(&mut buf, DESCRIPTORS_OFFSET);

    // Descriptor table: the used slots, then zeroed ones.
    for planned in objects {
        descriptor(&mut buf, planned, input.created);
    }
    pad_to(&mut buf, DATA_OFFSET);

    // In-memory objects, then alignment up to the partition.
    for bytes in objects.iter().filter_map(|o| o.bytes) {
        buf.extend_from_slice(bytes);
    }
    pad_to(&mut buf, partition_offset);
    buf
}

/// One used descriptor of an existing SIF file, as [`read_objects`] finds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredObject {
    /// The on-disk `DataType` (see [`SifDataType::code`]).
    pub data_type: i32,
    /// The descriptor name, without its NUL padding.
    pub name: String,
    /// Byte offset of the object in the file.
    pub offset: u64,
    /// Size of the object in bytes.
    pub size: u64,
    /// Whether this is the primary system partition, the root file system.
    pub primary_partition: bool,
}

/// Reads the used descriptors of the SIF file at `path` (any writer's: offsets come from the
/// header), so kiln can build on a SIF it holds.
pub fn read_objects(path: &Path) -> Result<Vec<StoredObject>, SifError> {
    File::open(path)
        .and_then(read_descriptors)
        .map_err(io_err("read", path))
}

/// Reads the used descriptors of a SIF file from its bytes. Anything that is not a SIF file, or
/// whose descriptor table is impossible, is an [`io::ErrorKind::InvalidData`] error saying why;
/// nothing in the file can make this allocate more than the largest table kiln accepts.
pub fn read_descriptors(mut sif: impl Read + Seek) -> io::Result<Vec<StoredObject>> {
    let invalid = |what: &str| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!("not a SIF file: {what}"),
        )
    };
    let mut header = [0u8; HEADER_LEN];
    sif.read_exact(&mut header)?;
    if &header[32..42] != MAGIC {
        return Err(invalid("no SIF_MAGIC"));
    }
    let field = |at: usize| {
        let mut bytes = [0u8; 8];
        bytes.copy_from_slice(&header[at..at + 8]);
        i64::from_le_bytes(bytes)
    };
    let (total, offset) = (field(88), field(96));
    if !(0..=MAX_DESCRIPTORS).contains(&total) || offset < HEADER_LEN as i64 {
        return Err(invalid("impossible descriptor table"));
    }
    let mut table = vec![0u8; usize::try_from(total).unwrap_or(0) * DESCRIPTOR_LEN];
    sif.seek(SeekFrom::Start(offset.unsigned_abs()))?;
    sif.read_exact(&mut table)?;
    let mut objects = Vec::new();
    for raw in table.chunks_exact(DESCRIPTOR_LEN) {
        if raw[4] == 0 {
            continue;
        }
        let int = |at: usize| i32::from_le_bytes([raw[at], raw[at + 1], raw[at + 2], raw[at + 3]]);
        let long = |at: usize| {
            let mut bytes = [0u8; 8];
            bytes.copy_from_slice(&raw[at..at + 8]);
            i64::from_le_bytes(bytes)
        };
        let (object_offset, size) = (long(17), long(25));
        if object_offset < 0 || size < 0 {
            return Err(invalid("negative object offset or size"));
        }
        let name = &raw[73..73 + NAME_LEN];
        let name_len = name.iter().position(|&b| b == 0).unwrap_or(NAME_LEN);
        let data_type = int(0);
        objects.push(StoredObject {
            data_type,
            name: String::from_utf8_lossy(&name[..name_len]).into_owned(),
            offset: object_offset.unsigned_abs(),
            size: size.unsigned_abs(),
            primary_partition: data_type == SifDataType::Partition.code()
                && int(201 + 4) == PART_PRIM_SYS,
        });
    }
    Ok(objects)
}

/// Appends one packed 585-byte descriptor.
fn descriptor(buf: &mut Vec<u8>, planned: &Planned<'_>, created: i64) {
    let start = buf.len();
    let object = &planned.object;
    buf.extend_from_slice(&object.data_type.code().to_le_bytes());
    buf.push(1); // Used
    buf.extend_from_slice(&object.id.to_le_bytes());
    buf.extend_from_slice(&DEFAULT_GROUP.to_le_bytes());
    buf.extend_from_slice(&0u32.to_le_bytes()); // LinkedID: none
    put_u64(buf, object.offset);
    put_u64(buf, object.size);
    put_u64(buf, planned.size_with_padding);
    buf.extend_from_slice(&created.to_le_bytes()); // CreatedAt
    buf.extend_from_slice(&created.to_le_bytes()); // ModifiedAt
    put_u64(buf, 0); // UID (deprecated)
    put_u64(buf, 0); // GID (deprecated)
    put_padded(buf, object.name.as_bytes(), NAME_LEN);
    put_padded(buf, &planned.extra, EXTRA_LEN);
    debug_assert_eq!(buf.len() - start, DESCRIPTOR_LEN);
}

/// Appends a non-negative `int64` field. Every offset and size here is far below `i64::MAX`,
/// where the two encodings agree.
fn put_u64(buf: &mut Vec<u8>, value: u64) {
    buf.extend_from_slice(&value.to_le_bytes());
}

/// Appends `bytes` NUL-padded to `len` (callers keep `bytes` shorter than `len`).
fn put_padded(buf: &mut Vec<u8>, bytes: &[u8], len: usize) {
    debug_assert!(bytes.len() <= len);
    buf.extend_from_slice(bytes);
    buf.resize(buf.len() + len.saturating_sub(bytes.len()), 0);
}

/// Zero-fills `buf` up to absolute file offset `offset`.
fn pad_to(buf: &mut Vec<u8>, offset: u64) {
    let len = usize::try_from(offset).unwrap_or(usize::MAX);
    if buf.len() < len {
        buf.resize(len, 0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_header_tells_the_architecture() {
        let mut header = vec![0u8; LAUNCH_SCRIPT_FIELD];
        header.extend_from_slice(MAGIC);
        header.extend_from_slice(VERSION);
        header.extend_from_slice(&SifArch::Arm64.code());
        assert_eq!(SifArch::of_header(&header), Some(SifArch::Arm64));
        header[LAUNCH_SCRIPT_FIELD] = b'X';
        assert_eq!(SifArch::of_header(&header), None, "not a SIF");
        assert_eq!(SifArch::of_header(b"short"), None);
    }

    /// A stand-in squashfs: a gzip superblock, then filler.
    fn fake_squashfs(dir: &Path, len: usize, compression: u16) -> PathBuf {
        let mut bytes: Vec<u8> = (0..len).map(|i| (i % 251) as u8).collect();
        bytes[..4].copy_from_slice(SQUASHFS_MAGIC);
        bytes[20..22].copy_from_slice(&compression.to_le_bytes());
        let path = dir.join("root.squashfs");
        fs::write(&path, bytes).unwrap();
        path
    }

    fn input<'a>(squashfs: &'a Path, oci_config: Option<&'a [u8]>) -> SifInput<'a> {
        SifInput {
            id: uuid_from(b"build key"),
            created: 1_700_000_000,
            arch: SifArch::Amd64,
            definition: b"bootstrap: docker\nfrom: alpine\n\n",
            inspect: br#"{"data":{"attributes":{}},"type":"container"}"#,
            oci_config,
            squashfs,
        }
    }

    fn i64_at(bytes: &[u8], at: usize) -> i64 {
        i64::from_le_bytes(bytes[at..at + 8].try_into().unwrap())
    }

    fn u32_at(bytes: &[u8], at: usize) -> u32 {
        u32::from_le_bytes(bytes[at..at + 4].try_into().unwrap())
    }

    #[test]
    fn written_objects_read_back() {
        let dir = tempfile::tempdir().unwrap();
        let squashfs = fake_squashfs(dir.path(), 5_000, SQUASHFS_GZIP);
        let out = dir.path().join("image.sif");
        let summary = write_sif(&input(&squashfs, Some(b"{}")), &out).unwrap();
        let read = read_objects(&out).unwrap();
        let seen: Vec<_> = read
            .iter()
            .map(|o| {
                (
                    o.data_type,
                    o.name.as_str(),
                    o.offset,
                    o.size,
                    o.primary_partition,
                )
            })
            .collect();
        let written: Vec<_> = summary
            .objects
            .iter()
            .map(|o| {
                let partition = o.data_type == SifDataType::Partition;
                (o.data_type.code(), o.name, o.offset, o.size, partition)
            })
            .collect();
        assert_eq!(seen, written);
        fs::write(&out, b"not a SIF, and longer than a header ".repeat(8)).unwrap();
        assert!(read_objects(&out).unwrap_err().to_string().contains("read"));
    }

    #[test]
    fn impossible_descriptor_tables_are_refused_before_reading_them() {
        let dir = tempfile::tempdir().unwrap();
        let squashfs = fake_squashfs(dir.path(), 5_000, SQUASHFS_GZIP);
        let out = dir.path().join("image.sif");
        write_sif(&input(&squashfs, None), &out).unwrap();
        let sif = fs::read(&out).unwrap();
        let read = |bytes: &[u8]| read_descriptors(io::Cursor::new(bytes));
        assert_eq!(read(&sif).unwrap(), read_objects(&out).unwrap());
        let with_field = |at: usize, value: i64| {
            let mut bytes = sif.clone();
            bytes[at..at + 8].copy_from_slice(&value.to_le_bytes());
            bytes
        };
        for bytes in [with_field(88, MAX_DESCRIPTORS + 1), with_field(96, 0)] {
            let err = read(&bytes).unwrap_err();
            assert_eq!(err.kind(), io::ErrorKind::InvalidData);
            assert_eq!(
                err.to_string(),
                "not a SIF file: impossible descriptor table"
            );
        }
        let past_the_end = with_field(96, sif.len() as i64);
        assert_eq!(
            read(&past_the_end).unwrap_err().kind(),
            io::ErrorKind::UnexpectedEof
        );
        assert_eq!(
            read(&sif[..100]).unwrap_err().kind(),
            io::ErrorKind::UnexpectedEof
        );
    }

    #[test]
    fn header_and_descriptors_follow_the_layout() {
        let dir = tempfile::tempdir().unwrap();
        let squashfs = fake_squashfs(dir.path(), 10_000, SQUASHFS_GZIP);
        let config = br#"{"Cmd":["sh"]}"#;
        let out = dir.path().join("image.sif");
        let summary = write_sif(&input(&squashfs, Some(config)), &out).unwrap();
        let bytes = fs::read(&out).unwrap();

        assert_eq!(&bytes[..31], b"#!/usr/bin/env run-singularity\n");
        assert!(bytes[31..32].iter().all(|&b| b == 0));
        assert_eq!(&bytes[32..42], b"SIF_MAGIC\0");
        assert_eq!(&bytes[42..45], b"01\0");
        assert_eq!(&bytes[45..48], b"02\0");
        assert_eq!(&bytes[48..64], &uuid_from(b"build key"));
        assert_eq!(i64_at(&bytes, 64), 1_700_000_000);
        assert_eq!(i64_at(&bytes, 72), 1_700_000_000);
        assert_eq!(i64_at(&bytes, 80), 44); // free
        assert_eq!(i64_at(&bytes, 88), 48); // total
        assert_eq!(i64_at(&bytes, 96), 4096);
        assert_eq!(i64_at(&bytes, 104), 28080);
        assert_eq!(i64_at(&bytes, 112), 32176);
        let data_size = i64_at(&bytes, 120);
        assert_eq!(32176 + data_size, bytes.len() as i64);
        assert!(bytes[128..4096].iter().all(|&b| b == 0));

        // Objects: def file, inspect metadata, OCI config packed from 32176, partition aligned.
        let def_len = 32u64;
        let inspect_len = 45u64;
        let expected = [
            (SifDataType::Definition, "", 32176, def_len),
            (
                SifDataType::GenericJson,
                INSPECT_NAME,
                32176 + def_len,
                inspect_len,
            ),
            (
                SifDataType::GenericJson,
                OCI_CONFIG_NAME,
                32176 + def_len + inspect_len,
                config.len() as u64,
            ),
            (SifDataType::Partition, "", 32768, 10_000),
        ];
        for (i, (data_type, name, offset, size)) in expected.into_iter().enumerate() {
            let object = &summary.objects[i];
            assert_eq!(object.id as usize, i + 1);
            assert_eq!(
                (object.data_type, object.name, object.offset, object.size),
                (data_type, name, offset, size)
            );

            let d = &bytes[4096 + i * 585..4096 + (i + 1) * 585];
            assert_eq!(u32_at(d, 0), data_type.code() as u32);
            assert_eq!(d[4], 1);
            assert_eq!(u32_at(d, 5) as usize, i + 1);
            assert_eq!(u32_at(d, 9), 0xf000_0001);
            assert_eq!(u32_at(d, 13), 0);
            assert_eq!(i64_at(d, 17), offset as i64);
            assert_eq!(i64_at(d, 25), size as i64);
            assert_eq!(i64_at(d, 41), 1_700_000_000);
            assert_eq!(i64_at(d, 49), 1_700_000_000);
            assert_eq!(&d[73..73 + name.len()], name.as_bytes());
            assert!(d[73 + name.len()..201].iter().all(|&b| b == 0));
        }
        // SizeWithPadding: the packed objects have none; the partition carries its alignment.
        let partition = &bytes[4096 + 3 * 585..4096 + 4 * 585];
        assert_eq!(i64_at(partition, 33), 32768 - 32176 - 32 - 45 - 14 + 10_000);
        assert_eq!(
            &partition[201..212],
            &[1, 0, 0, 0, 2, 0, 0, 0, b'0', b'2', 0]
        );
        assert!(partition[212..585].iter().all(|&b| b == 0));
        assert!(bytes[4096 + 4 * 585..32176].iter().all(|&b| b == 0));

        // Contents at their offsets, zeros before the partition.
        assert_eq!(&bytes[32176..32208], input(&squashfs, None).definition);
        assert!(bytes[32176 + 91..32768].iter().all(|&b| b == 0));
        assert_eq!(&bytes[32768..], fs::read(&squashfs).unwrap());

        assert_eq!(summary.size, bytes.len() as u64);
        assert_eq!(summary.sha256, hex::encode(Sha256::digest(&bytes)));
        let mode = fs::metadata(&out).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o755);
    }

    #[test]
    fn same_input_same_bytes() {
        let dir = tempfile::tempdir().unwrap();
        let squashfs = fake_squashfs(dir.path(), 5000, SQUASHFS_GZIP);
        let a = write_sif(&input(&squashfs, None), &dir.path().join("a.sif")).unwrap();
        let b = write_sif(&input(&squashfs, None), &dir.path().join("b.sif")).unwrap();
        assert_eq!(a, b);
        assert_eq!(
            fs::read(dir.path().join("a.sif")).unwrap(),
            fs::read(dir.path().join("b.sif")).unwrap()
        );
        assert_eq!(a.objects.len(), 3);
        // Only temp files' absence and the two outputs remain.
        let mut names: Vec<_> = fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        names.sort();
        assert_eq!(names, ["a.sif", "b.sif", "root.squashfs"]);
    }

    #[test]
    fn arch_comes_from_the_platform() {
        assert_eq!(SifArch::from(Platform::LinuxAmd64).code(), *b"02\0");
        assert_eq!(SifArch::from(Platform::LinuxArm64).code(), *b"04\0");
        assert_eq!(SifArch::from(Platform::LinuxArm64).as_str(), "arm64");
    }

    #[test]
    fn uuid_is_stable_with_version_and_variant_bits() {
        let id = uuid_from(b"key");
        assert_eq!(id, uuid_from(b"key"));
        assert_ne!(id, uuid_from(b"other key"));
        assert_eq!(id[6] >> 4, 8);
        assert_eq!(id[8] >> 6, 0b10);
    }

    #[test]
    fn refuses_what_singularity_cannot_mount() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("image.sif");

        let zstd = fake_squashfs(dir.path(), 4096, 6);
        let err = write_sif(&input(&zstd, None), &out).unwrap_err();
        assert!(matches!(err, SifError::Compression { .. }), "{err}");
        assert!(err.to_string().contains("zstd"), "{err}");

        let not_squashfs = dir.path().join("root.tar");
        fs::write(&not_squashfs, b"not a file system").unwrap();
        let err = write_sif(&input(&not_squashfs, None), &out).unwrap_err();
        assert!(matches!(err, SifError::NotSquashfs { .. }), "{err}");

        let missing = dir.path().join("missing.squashfs");
        let err = write_sif(&input(&missing, None), &out).unwrap_err();
        assert!(err.to_string().contains("missing.squashfs"), "{err}");
        assert!(!out.exists());
    }
}
