//! Intel AMX (Advanced Matrix Extensions) tiles for the integer product: `tdpbusd` multiplies a
//! `16 x 64` tile of `u8` activations by a `64 x 16` tile of `i8` weights into a `16 x 16`
//! tile of `i32` sums, 16,384 products per instruction where VNNI's `vpdpbusd` does 64.
//!
//! The sums are exact, as on VNNI: the tile path and the VNNI path agree bit for bit (tested).
//! It runs where it pays, a batch's rows through a fully connected layer (or a pointwise
//! convolution): tiles of 16 rows want a batch, so fewer rows than [`MIN_ROWS`] stay on VNNI,
//! as do the windows of larger convolutions (a tile row is 64 contiguous bytes, a window is
//! `kernel` runs of `kernel * channels`).
//!
//! Rust has no stable AMX intrinsics, so the tile instructions are inline assembly (the
//! assembler knows them whatever the target features). Linux hands the tile state to a
//! process only when asked (`arch_prctl(ARCH_REQ_XCOMP_PERM, XFEATURE_XTILEDATA)`, once per
//! process, in [`usable`]); without it, or on another CPU or OS, the tiles are never used.
//!
//! `unsafe` is allowed in this module for the assembly and the permission's system call: each
//! tile load reads 16 rows of 64 bytes at a stride inside a buffer whose length [`gemm`]
//! asserts first, and the tile configuration is loaded before and released after every call,
//! on the calling thread.
#![allow(unsafe_code)]

/// The fewest rows that run on tiles: a tile holds 16 rows, so fewer would leave it partly
/// empty while VNNI's tiles of up to 12 rows fit them (not tuned by measurement).
pub(crate) const MIN_ROWS: usize = 16;

/// Rows and bytes of one tile row; outputs per weight tile.
const TILE_ROWS: usize = 16;
const TILE_BYTES: usize = 64;

/// Whether this process can run the tiles: the CPU has AMX-TILE and AMX-INT8 and the kernel
/// granted the tile state (asked once, on first use).
pub(crate) fn usable() -> bool {
    static USABLE: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *USABLE.get_or_init(|| {
        #[cfg(all(target_arch = "x86_64", target_os = "linux"))]
        {
            cpu_has_amx() && request_tile_state()
        }
        #[cfg(not(all(target_arch = "x86_64", target_os = "linux")))]
        {
            false
        }
    })
}

#[cfg(all(target_arch = "x86_64", target_os = "linux"))]
fn cpu_has_amx() -> bool {
    use std::arch::x86_64::__cpuid_count;
    // CPUID leaf 7, sub-leaf 0 (when leaf 0 says it exists): EDX bit 24 is AMX-TILE, bit 25
    // AMX-INT8.
    if __cpuid_count(0, 0).eax < 7 {
        return false;
    }
    let edx = __cpuid_count(7, 0).edx;
    edx >> 24 & 1 == 1 && edx >> 25 & 1 == 1 && crate::Int8Path::vnni_available()
}

/// `arch_prctl(ARCH_REQ_XCOMP_PERM, XFEATURE_XTILEDATA)`: whether Linux (5.16 or later) lets
/// this process use the tile data.
#[cfg(all(target_arch = "x86_64", target_os = "linux"))]
fn request_tile_state() -> bool {
    const SYS_ARCH_PRCTL: i64 = 158;
    const ARCH_REQ_XCOMP_PERM: i64 = 0x1023;
    const XFEATURE_XTILEDATA: i64 = 18;
    let ret: i64;
    // SAFETY: a system call that only changes which register state the kernel saves for this
    // process; it reads and writes no memory of ours.
    unsafe {
        std::arch::asm!(
            "syscall",
            inlateout("rax") SYS_ARCH_PRCTL => ret,
            in("rdi") ARCH_REQ_XCOMP_PERM,
            in("rsi") XFEATURE_XTILEDATA,
            lateout("rcx") _,
            lateout("r11") _,
            options(nostack),
        );
    }
    ret == 0
}

/// A weight matrix packed for the tiles: the VNNI packing's `[16 outputs][16 groups of 4
/// inputs][16][4]` tiles, `k` padded to whole tiles of 64 and the blocks of 16 outputs to an
/// even count (the tiles run two blocks at a time), the padding zero, laid out `[block
/// pair][k64 / 64][2][tile]`.
#[derive(Debug, Clone)]
pub(crate) struct TileWeights {
    /// From `packed[start..]`, on a 64-byte boundary.
    packed: Vec<i8>,
    start: usize,
    k64: usize,
    blocks: usize,
}

impl TileWeights {
    /// From the VNNI packing (`[blocks][k4 / 4][16][4]`).
    pub(crate) fn new(vnni: &[i8], k4: usize, blocks: usize) -> Self {
        assert_eq!(vnni.len(), blocks * k4 * 16, "the VNNI packing's length");
        let k64 = k4.div_ceil(TILE_BYTES) * TILE_BYTES;
        let even = blocks.div_ceil(2) * 2;
        let mut packed = vec![0i8; even * k64 * 16 + 63];
        let start = crate::aligned::aligned_start(&packed);
        // `[pair][k64 / 64][2][1 KiB tile]`: a pair's two weight tiles for each step of 64
        // inputs side by side, so the weights are read as one stream.
        const TILE: usize = TILE_BYTES * 16;
        for b in 0..blocks {
            let (pair, second) = (b / 2, b % 2);
            for kc in 0..k4.div_ceil(TILE_BYTES) {
                let len = TILE.min(k4 * 16 - kc * TILE);
                let from = &vnni[b * k4 * 16 + kc * TILE..][..len];
                let at = start + pair * 2 * k64 * 16 + (kc * 2 + second) * TILE;
                packed[at..][..len].copy_from_slice(from);
            }
        }
        Self {
            packed,
            start,
            k64,
            blocks: even,
        }
    }

    /// The row stride [`gemm`] reads activations at: `k` padded to 64, the padding zero.
    pub(crate) fn row_stride(&self) -> usize {
        self.k64
    }
}

/// The tile configuration: palette 1, eight tiles of 16 rows of 64 bytes (`tmm0..3` the sums
/// of a `32 x 32` block, `tmm4, 5` two row tiles of activations, `tmm6, 7` two weight tiles).
#[repr(C, align(64))]
struct TileConfig([u8; 64]);

impl TileConfig {
    fn eight_full_tiles() -> Self {
        let mut config = [0u8; 64];
        config[0] = 1; // palette
        for t in 0..8 {
            config[16 + 2 * t..][..2].copy_from_slice(&(TILE_BYTES as u16).to_le_bytes());
            config[48 + t] = TILE_ROWS as u8;
        }
        Self(config)
    }
}

/// Rows of sums per block handed to the sink, and outputs per block.
pub(crate) const BLOCK_ROWS: usize = 2 * TILE_ROWS;
pub(crate) const BLOCK_OUTPUTS: usize = 32;

/// `a` (`m` rows, [`TileWeights::row_stride`] apart, `m` padded to a multiple of 32 with zero
/// rows; best on a 64-byte boundary, see [`crate::aligned::aligned_start`]) times the
/// weights: each `32 x 32` block of sums goes to `sink(first_row, first_output, sums)` with
/// `sums` row-major, 32 apart (rows and outputs past the real ones included).
///
/// # Panics
/// If `a` is shorter than the padded rows, or [`usable`] is false.
pub(crate) fn gemm(
    w: &TileWeights,
    a: &[u8],
    m: usize,
    mut sink: impl FnMut(usize, usize, &[i32]),
) {
    let rows = m.div_ceil(BLOCK_ROWS) * BLOCK_ROWS;
    assert!(a.len() >= rows * w.k64, "the activations' padded rows");
    assert!(usable(), "AMX tiles on a CPU or OS without them");
    #[cfg(target_arch = "x86_64")]
    {
        let mut sums = [0i32; BLOCK_ROWS * BLOCK_OUTPUTS];
        let config = TileConfig::eight_full_tiles();
        // SAFETY: `usable` checked the CPU and the kernel's permission. Every tile load reads
        // 16 rows of 64 bytes: activation rows `i..i + 32` from column `kc * 64` at stride
        // `k64` lie inside `a` (asserted above), a weight tile's 1 KiB at stride 64 inside the
        // block pair's `k64 * 32` bytes; the stores write the 32 x 32 `sums` at a stride of 128
        // bytes. The configuration is released before returning.
        unsafe {
            std::arch::asm!("ldtilecfg [{}]", in(reg) config.0.as_ptr(), options(nostack));
            let (stride, ka) = (w.k64, w.k64 / TILE_BYTES);
            let block_len = w.k64 * 16;
            for b in (0..w.blocks).step_by(2) {
                let w0 = w.packed.as_ptr().add(w.start + b * block_len);
                let w1 = w0.add(TILE_BYTES * 16);
                for i in (0..rows).step_by(BLOCK_ROWS) {
                    let a0 = a.as_ptr().add(i * stride);
                    let a1 = a0.add(TILE_ROWS * stride);
                    std::arch::asm!(
                        "tilezero tmm0",
                        "tilezero tmm1",
                        "tilezero tmm2",
                        "tilezero tmm3",
                        options(nostack)
                    );
                    for kc in 0..ka {
                        std::arch::asm!(
                            "tileloadd tmm4, [{a0} + {sa}*1]",
                            "tileloadd tmm6, [{w0} + {sw}*1]",
                            "tdpbusd tmm0, tmm4, tmm6",
                            "tileloadd tmm7, [{w1} + {sw}*1]",
                            "tdpbusd tmm1, tmm4, tmm7",
                            "tileloadd tmm5, [{a1} + {sa}*1]",
                            "tdpbusd tmm2, tmm5, tmm6",
                            "tdpbusd tmm3, tmm5, tmm7",
                            a0 = in(reg) a0.add(kc * TILE_BYTES),
                            a1 = in(reg) a1.add(kc * TILE_BYTES),
                            w0 = in(reg) w0.add(kc * 2 * TILE_BYTES * 16),
                            w1 = in(reg) w1.add(kc * 2 * TILE_BYTES * 16),
                            sa = in(reg) stride,
                            sw = in(reg) TILE_BYTES,
                            options(nostack, readonly)
                        );
                    }
                    let out = sums.as_mut_ptr();
                    std::arch::asm!(
                        "tilestored [{c0} + {s}*1], tmm0",
                        "tilestored [{c1} + {s}*1], tmm1",
                        "tilestored [{c2} + {s}*1], tmm2",
                        "tilestored [{c3} + {s}*1], tmm3",
                        c0 = in(reg) out,
                        c1 = in(reg) out.add(TILE_ROWS),
                        c2 = in(reg) out.add(TILE_ROWS * BLOCK_OUTPUTS),
                        c3 = in(reg) out.add(TILE_ROWS * BLOCK_OUTPUTS + TILE_ROWS),
                        s = in(reg) BLOCK_OUTPUTS * 4,
                        options(nostack)
                    );
                    sink(i, b * 16, &sums);
                }
            }
            std::arch::asm!("tilerelease", options(nostack));
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        let _ = (&mut sink, w);
        unreachable!("usable() is false off x86_64");
    }
}
