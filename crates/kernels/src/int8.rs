//! Integer inference: `u8` activations times `i8` weights summed in `i32`, and the
//! requantization that takes the sums back onto an activation grid.
//!
//! The product is the one an integer model is made of: activations on an unsigned affine grid
//! (`x = (q - z) * s_x`, `q` in `0..=255`), weights on a symmetric per-channel grid
//! (`w = l * s_w`, `l` in `-127..=127`). `sum_k (q_k - z) l_k = sum_k q_k l_k - z sum_k l_k`,
//! so the kernel sums `q_k l_k` and the epilogue subtracts `z` times the weights' row sum,
//! computed once at packing. Every sum is exact (at most `255 * 127` per product; fan-ins are
//! bounded by [`MAX_FAN_IN`] so no sum can leave `i32`), so the VNNI path and the portable path
//! agree bit for bit.
//!
//! With AVX-512 VNNI (`vpdpbusd`: 64 `u8 x i8` products summed in fours into sixteen `i32`
//! lanes per instruction) the micro-kernel keeps a tile of up to `12 x 16` or `5 x 64` sums in
//! registers; the weights are packed `[16-row block][k / 4][16][4]` so one 64-byte load feeds
//! a whole row of the tile, and the epilogue runs on the tile before it leaves the registers.
//! A convolution's windows are read in place from the padded image ([`Rows`]), not unfolded.
//! Other CPUs run the portable loops: AVX2's `vpmaddwd` where present, else plain ones (or ask
//! for them: [`Int8Path`]).
//!
//! `unsafe` is allowed in this module for the intrinsics and the `#[target_feature]` functions
//! only (pulp, our safe SIMD layer, has no VNNI): each call is behind the run-time feature
//! check, and each pointer the micro-kernel reads is inside a slice whose length `gemm`
//! asserts first.
#![allow(unsafe_code)]

/// Which integer kernels run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Int8Path {
    /// AMX tiles (`tdpbusd`) for a batch's rows through a fully connected layer or a
    /// pointwise convolution, VNNI for everything else ([`crate::amx`]).
    Amx,
    /// AVX-512 VNNI (`vpdpbusd`).
    Vnni,
    /// Plain loops the compiler vectorises for the build's target.
    Portable,
}

/// Set to `portable` to run the portable kernels on a CPU that has VNNI, or to `vnni` to keep
/// a CPU with AMX on VNNI (to measure them, or to compare the paths).
pub const INT8_PATH_ENV: &str = "COMPRESS_INT8";

impl Int8Path {
    /// The fastest path this CPU (and OS, for AMX) runs, checked at run time, unless
    /// [`INT8_PATH_ENV`] asks for a slower one.
    pub fn detect() -> Self {
        let asked = std::env::var(INT8_PATH_ENV).unwrap_or_default();
        let asked = |path: &str| asked.eq_ignore_ascii_case(path);
        if asked("portable") || !Self::vnni_available() {
            Int8Path::Portable
        } else if asked("vnni") || !crate::amx::usable() {
            Int8Path::Vnni
        } else {
            Int8Path::Amx
        }
    }

    /// Whether this CPU runs the VNNI kernels.
    pub fn vnni_available() -> bool {
        #[cfg(target_arch = "x86_64")]
        {
            is_x86_feature_detected!("avx512f")
                && is_x86_feature_detected!("avx512bw")
                && is_x86_feature_detected!("avx512vnni")
        }
        #[cfg(not(target_arch = "x86_64"))]
        {
            false
        }
    }

    /// Whether this path runs the AVX-512 kernels (VNNI, and AMX's epilogues and everything
    /// it leaves to VNNI) on this CPU.
    fn wide(self) -> bool {
        matches!(self, Int8Path::Amx | Int8Path::Vnni) && Self::vnni_available()
    }

    /// How reports name it.
    pub fn name(self) -> &'static str {
        match self {
            Int8Path::Amx => "int8 AMX+VNNI",
            Int8Path::Vnni => "int8 VNNI",
            Int8Path::Portable => "int8 portable",
        }
    }
}

/// Output rows per packed block (one 512-bit register of `i32`).
pub const BLOCK: usize = 16;

/// The largest fan-in whose sums always fit `i32`: `k * 255 * 127` (plus the zero point's
/// offset, of the same size) below `2^31`.
pub const MAX_FAN_IN: usize = (i32::MAX / 2 / (255 * 127)) as usize;

/// Where the rows of an activation matrix lie in memory: row `i`'s values are `segments` runs
/// of `segment` bytes, run `s` starting at `i * row_step + s * segment_step`. Whole rows one
/// after another are [`Rows::dense`]; a convolution reads its windows straight from the
/// (padded) image, one run per window row, instead of unfolding them first.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rows {
    pub row_step: usize,
    pub segments: usize,
    pub segment_step: usize,
    /// A multiple of 4.
    pub segment: usize,
}

impl Rows {
    /// Rows of `stride` values each, one after another.
    pub fn dense(stride: usize) -> Self {
        Self {
            row_step: stride,
            segments: 1,
            segment_step: 0,
            segment: stride,
        }
    }

    /// The bytes `m` rows span.
    pub fn extent(&self, m: usize) -> usize {
        match m {
            0 => 0,
            _ => (m - 1) * self.row_step + (self.segments - 1) * self.segment_step + self.segment,
        }
    }
}

/// Rows the portable path gathers at a time.
const GATHERED: usize = 16;

thread_local! {
    /// Each thread's sums when the epilogue runs after the product.
    static SUMS: std::cell::RefCell<Vec<i32>> = const { std::cell::RefCell::new(Vec::new()) };
    /// Each thread's rows gathered whole for the portable kernels, or padded for the tiles.
    static GATHERED_ROWS: std::cell::RefCell<Vec<u8>> =
        const { std::cell::RefCell::new(Vec::new()) };
}

/// What a VNNI tile does with its sums.
#[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
enum Store<'o> {
    /// Writes them (`out_stride` apart).
    Sums(&'o mut [i32]),
    /// Writes their levels, `stride` apart.
    Levels {
        out: &'o mut [u8],
        stride: usize,
        epilogue: Fused<'o>,
    },
}

/// An epilogue in the form the tile applies: per channel (padded to whole blocks) the offset,
/// multiplier and bias divided by the grid's scale, and the grid.
#[derive(Clone, Copy)]
#[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
struct Fused<'e> {
    offsets: &'e [i32],
    multipliers: &'e [f32],
    biases: &'e [f32],
    grid: OutputGrid,
}

/// A weight matrix `[n, k]` of levels, packed for [`PackedInt8::gemm`].
#[derive(Debug, Clone)]
pub struct PackedInt8 {
    n: usize,
    k: usize,
    /// `k` rounded up to a multiple of 4: the row stride every activation row must have, its
    /// tail zero.
    k4: usize,
    /// `[n.div_ceil(16)][k4 / 4][16][4]`, rows past `n` and columns past `k` zero.
    packed: Vec<i8>,
    /// `[n.div_ceil(16)][k4 / 2][16][2]` as `i16`, for the portable path: two inputs' weights
    /// for 16 outputs side by side, the shape of `pmaddwd` (SSE2; 16 products summed in pairs
    /// into eight `i32`), which the compiler matches.
    columns: Vec<i16>,
    /// `sum_k l_k` per row.
    row_sums: Vec<i32>,
    /// `packed` as the AMX tiles read it, made on their first use.
    tiles: std::sync::OnceLock<crate::amx::TileWeights>,
}

impl PackedInt8 {
    /// Packs `levels` (`[n, k]` row-major).
    ///
    /// # Panics
    /// If `k` is over [`MAX_FAN_IN`] (callers check it and keep their float path).
    pub fn new(levels: &[i8], n: usize, k: usize) -> Self {
        assert_eq!(levels.len(), n * k, "levels are [n, k]");
        assert!(k <= MAX_FAN_IN, "a fan-in of {k} could overflow i32 sums");
        let k4 = k.div_ceil(4) * 4;
        let blocks = n.div_ceil(BLOCK);
        let mut packed = vec![0i8; blocks * BLOCK * k4];
        let mut columns = vec![0i16; blocks * BLOCK * k4];
        for r in 0..n {
            for c in 0..k {
                let l = levels[r * k + c];
                let (b, lane) = (r / BLOCK, r % BLOCK);
                packed[((b * (k4 / 4) + c / 4) * BLOCK + lane) * 4 + c % 4] = l;
                columns[((b * k4 / 2 + c / 2) * BLOCK + lane) * 2 + c % 2] = l as i16;
            }
        }
        let row_sums = (0..n)
            .map(|r| levels[r * k..(r + 1) * k].iter().map(|&l| l as i32).sum())
            .collect();
        Self {
            n,
            k,
            k4,
            packed,
            columns,
            row_sums,
            tiles: std::sync::OnceLock::new(),
        }
    }

    /// Output rows (the layer's outputs).
    pub fn n(&self) -> usize {
        self.n
    }

    /// Fan-in.
    pub fn k(&self) -> usize {
        self.k
    }

    /// The stride activation rows need: `k` rounded up to 4, the tail zero.
    pub fn row_stride(&self) -> usize {
        self.k4
    }

    /// The output stride [`gemm`](Self::gemm) writes: `n` rounded up to 16.
    pub fn out_stride(&self) -> usize {
        self.n.div_ceil(BLOCK) * BLOCK
    }

    /// `sum_k l_k` of each output row.
    pub fn row_sums(&self) -> &[i32] {
        &self.row_sums
    }

    /// `out[i][j] = sum_k a[i][k] * w[j][k]` for the `m` rows of `a` laid out as `rows` says;
    /// `out` has stride [`out_stride`](Self::out_stride) (columns past `n` written with zeros).
    pub fn gemm(&self, path: Int8Path, a: &[u8], rows: Rows, m: usize, out: &mut [i32]) {
        self.check(a, rows, m);
        assert!(out.len() >= m * self.out_stride());
        if self.runs_on_tiles(path, rows, m) {
            return self.gemm_tiles(a, rows, m, Store::Sums(out));
        }
        match path {
            #[cfg(target_arch = "x86_64")]
            _ if path.wide() => {
                // SAFETY: the CPU has the features (checked above); the bounds are checked.
                unsafe { vnni::gemm(self, a, rows, m, Store::Sums(out)) }
            }
            _ => self.gemm_portable(a, rows, m, out),
        }
    }

    /// Whether a product of `m` rows laid out as `rows` runs on AMX tiles: whole rows (a tile
    /// row is 64 contiguous bytes), enough of them to fill tiles.
    fn runs_on_tiles(&self, path: Int8Path, rows: Rows, m: usize) -> bool {
        path == Int8Path::Amx
            && rows.segments == 1
            && m >= crate::amx::MIN_ROWS
            && crate::amx::usable()
    }

    /// The product on AMX tiles: the rows copied into a buffer the thread keeps at the tiles'
    /// stride (their padding zero), each `32 x 32` block of sums stored as `store` says.
    fn gemm_tiles(&self, a: &[u8], rows: Rows, m: usize, mut store: Store) {
        use crate::amx::{BLOCK_OUTPUTS, BLOCK_ROWS};
        let tiles = self
            .tiles
            .get_or_init(|| crate::amx::TileWeights::new(&self.packed, self.k4, self.blocks()));
        let stride = tiles.row_stride();
        let padded_rows = m.div_ceil(BLOCK_ROWS) * BLOCK_ROWS;
        GATHERED_ROWS.with_borrow_mut(|buffer| {
            buffer.clear();
            buffer.resize(padded_rows * stride + 63, 0);
            let start = crate::aligned::aligned_start(buffer);
            let buffer = &mut buffer[start..][..padded_rows * stride];
            for (i, row) in buffer.chunks_exact_mut(stride).take(m).enumerate() {
                row[..self.k4].copy_from_slice(&a[i * rows.row_step..][..self.k4]);
            }
            let ldo = self.out_stride();
            crate::amx::gemm(tiles, buffer, m, |i0, c0, sums| {
                let valid_rows = BLOCK_ROWS.min(m - i0);
                let sums = sums.chunks_exact(BLOCK_OUTPUTS).take(valid_rows);
                match &mut store {
                    Store::Sums(out) => {
                        let width = BLOCK_OUTPUTS.min(ldo - c0);
                        for (r, row) in sums.enumerate() {
                            out[(i0 + r) * ldo + c0..][..width].copy_from_slice(&row[..width]);
                        }
                    }
                    #[cfg(target_arch = "x86_64")]
                    Store::Levels {
                        out,
                        stride,
                        epilogue,
                    } => {
                        for (r, row) in sums.enumerate() {
                            let dst = &mut out[(i0 + r) * *stride..];
                            // SAFETY: AMX implies AVX-512 (`amx::usable` checks VNNI).
                            unsafe { vnni::store_levels(row, c0, self.n, epilogue, dst) };
                        }
                    }
                    #[cfg(not(target_arch = "x86_64"))]
                    Store::Levels { .. } => unreachable!("no tiles off x86_64"),
                }
            });
        });
    }

    /// Blocks of 16 outputs.
    fn blocks(&self) -> usize {
        self.n.div_ceil(BLOCK)
    }

    /// The product's rows through `epilogue` onto its grid: `out` holds each row's `n` levels,
    /// `out_stride` apart. With VNNI and no BatchNorm to apply the epilogue runs on the tile in
    /// registers; otherwise on the sums, written first.
    pub fn gemm_levels(
        &self,
        path: Int8Path,
        (a, rows, m): (&[u8], Rows, usize),
        epilogue: &Epilogue,
        (out, out_stride): (&mut [u8], usize),
    ) {
        self.check(a, rows, m);
        assert!(epilogue.len() == self.n && out_stride >= self.n);
        assert!(m == 0 || out.len() >= (m - 1) * out_stride + self.n);
        #[cfg(target_arch = "x86_64")]
        if let Some(fused) = epilogue.fused().filter(|_| path.wide()) {
            let store = Store::Levels {
                out,
                stride: out_stride,
                epilogue: fused,
            };
            if self.runs_on_tiles(path, rows, m) {
                return self.gemm_tiles(a, rows, m, store);
            }
            // SAFETY: the CPU has the features (checked above); the bounds are checked.
            return unsafe { vnni::gemm(self, a, rows, m, store) };
        }
        let ldo = self.out_stride();
        SUMS.with_borrow_mut(|sums| {
            sums.resize(m * ldo, 0);
            self.gemm(path, a, rows, m, sums);
            epilogue.to_levels(path, (sums, ldo), (out, out_stride));
        });
    }

    /// That `rows` fit the weights and `a` holds all `m` of them.
    fn check(&self, a: &[u8], rows: Rows, m: usize) {
        assert!(
            rows.segments * rows.segment == self.k4 && rows.segment.is_multiple_of(4),
            "rows of {} x {} values for a fan-in of {}",
            rows.segments,
            rows.segment,
            self.k4
        );
        assert!(
            a.len() >= rows.extent(m),
            "the rows run past the activations"
        );
    }

    /// The portable product, on rows gathered whole, [`GATHERED`] at a time, into a buffer the
    /// thread keeps.
    fn gemm_portable(&self, a: &[u8], rows: Rows, m: usize, out: &mut [i32]) {
        GATHERED_ROWS.with_borrow_mut(|buffer| {
            buffer.resize(GATHERED * self.k4, 0);
            self.portable_gathered(a, rows, m, out, buffer)
        });
    }

    /// [`Self::gemm_portable`] with `buffer` for its gathered rows.
    fn portable_gathered(
        &self,
        a: &[u8],
        rows: Rows,
        m: usize,
        out: &mut [i32],
        buffer: &mut [u8],
    ) {
        let (k4, ldo) = (self.k4, self.out_stride());
        for i0 in (0..m).step_by(GATHERED) {
            let count = GATHERED.min(m - i0);
            for r in 0..count {
                let dst = &mut buffer[r * k4..(r + 1) * k4];
                for (s, seg) in dst.chunks_exact_mut(rows.segment).enumerate() {
                    let at = (i0 + r) * rows.row_step + s * rows.segment_step;
                    seg.copy_from_slice(&a[at..at + rows.segment]);
                }
            }
            let out = &mut out[i0 * ldo..(i0 + count) * ldo];
            #[cfg(target_arch = "x86_64")]
            if is_x86_feature_detected!("avx2") {
                // SAFETY: the CPU has AVX2 (checked on the line above).
                unsafe { self.gemm_portable_avx2(buffer, count, out) };
                continue;
            }
            self.portable_blocks(buffer, count, out);
        }
    }

    /// [`Self::portable_blocks`] with AVX2's `vpmaddwd` written out: the compiler builds each
    /// broadcast pair of activations from single words otherwise.
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2")]
    unsafe fn gemm_portable_avx2(&self, a: &[u8], m: usize, out: &mut [i32]) {
        use std::arch::x86_64::*;
        const ROWS: usize = 4;
        let (k4, ldo) = (self.k4, self.out_stride());
        let pairs = k4 / 2;
        for (b, block) in self.columns.chunks_exact(k4 * BLOCK).enumerate() {
            let w = block.as_ptr();
            let mut i0 = 0;
            while i0 < m {
                let rows = ROWS.min(m - i0);
                let mut acc = [[_mm256_setzero_si256(); 2]; ROWS];
                for k2 in 0..pairs {
                    let w0 = _mm256_loadu_si256(w.add(k2 * 2 * BLOCK).cast());
                    let w1 = _mm256_loadu_si256(w.add(k2 * 2 * BLOCK + BLOCK).cast());
                    for (r, acc) in acc.iter_mut().enumerate().take(rows) {
                        let x = &a[(i0 + r) * k4 + 2 * k2..][..2];
                        let pair = _mm256_set1_epi32(x[0] as i32 | (x[1] as i32) << 16);
                        acc[0] = _mm256_add_epi32(acc[0], _mm256_madd_epi16(pair, w0));
                        acc[1] = _mm256_add_epi32(acc[1], _mm256_madd_epi16(pair, w1));
                    }
                }
                for (r, acc) in acc.iter().enumerate().take(rows) {
                    let dst = out[(i0 + r) * ldo + b * BLOCK..][..BLOCK].as_mut_ptr();
                    _mm256_storeu_si256(dst.cast(), acc[0]);
                    _mm256_storeu_si256(dst.add(8).cast(), acc[1]);
                }
                i0 += rows;
            }
        }
    }

    /// Rows in fours against each block of 16 outputs: per pair of inputs, its two activations
    /// times the block's 16 pairs of weights, in `i16` (a level in `0..=255` times one in
    /// `-127..=127` fits), each pair's sum added in `i32`.
    #[inline(always)]
    fn portable_blocks(&self, a: &[u8], m: usize, out: &mut [i32]) {
        const ROWS: usize = 4;
        let (k4, ldo) = (self.k4, self.out_stride());
        for (b, block) in self.columns.chunks_exact(k4 * BLOCK).enumerate() {
            for i0 in (0..m).step_by(ROWS) {
                let rows = ROWS.min(m - i0);
                let mut acc = [[0i32; BLOCK]; ROWS];
                for (k2, w) in block.chunks_exact(2 * BLOCK).enumerate() {
                    for (r, acc) in acc.iter_mut().enumerate().take(rows) {
                        let x = &a[(i0 + r) * k4 + 2 * k2..][..2];
                        let (x0, x1) = (x[0] as i16 as i32, x[1] as i16 as i32);
                        for (s, w) in acc.iter_mut().zip(w.chunks_exact(2)) {
                            *s += x0 * w[0] as i32 + x1 * w[1] as i32;
                        }
                    }
                }
                for (r, acc) in acc.iter().enumerate().take(rows) {
                    out[(i0 + r) * ldo + b * BLOCK..][..BLOCK].copy_from_slice(acc);
                }
            }
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod vnni {
    use std::arch::x86_64::*;

    use super::{Fused, PackedInt8, Rows, Store, BLOCK, LIMIT};

    /// One call's operands: the activations, their layout, the first row, where the sums go,
    /// and the first block of 16 outputs.
    type Run<'r, 'o> = (&'r [u8], Rows, usize, &'r mut Store<'o>, usize);

    /// Tiles of `MR` rows by `NR` blocks of 16 outputs: `MR * NR` accumulators, `NR` weight
    /// registers and one broadcast within the 32 registers. Measured (`benches/int8.rs`): with
    /// 24 accumulators (12 x 2, 6 x 4) the compiler spilled some to the stack inside the loop
    /// and VGG ran 1.5x slower than with 16 to 20.
    #[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
    pub(super) unsafe fn gemm(w: &PackedInt8, a: &[u8], rows: Rows, m: usize, mut store: Store) {
        let blocks = w.n.div_ceil(BLOCK);
        let mut b = 0;
        while b < blocks {
            let run = (a, rows, m, &mut store, b);
            match blocks - b {
                1 => tiles::<12, 1>(w, run),
                2 => tiles::<8, 2>(w, run),
                3 => tiles::<6, 3>(w, run),
                _ => tiles::<5, 4>(w, run),
            }
            b += (blocks - b).min(4);
        }
    }

    /// Every row against blocks `b..b + NR`: tiles of `MR` rows, then of 4, then single rows
    /// (`run`'s third field is the row count here).
    #[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
    unsafe fn tiles<const MR: usize, const NR: usize>(w: &PackedInt8, run: Run) {
        let (a, rows, m, store, b) = run;
        let mut i = 0;
        while i + MR <= m {
            tile::<MR, NR>(w, (a, rows, i, store, b));
            i += MR;
        }
        while i + 4 <= m {
            tile::<4, NR>(w, (a, rows, i, store, b));
            i += 4;
        }
        while i < m {
            tile::<1, NR>(w, (a, rows, i, store, b));
            i += 1;
        }
    }

    #[inline]
    #[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
    unsafe fn tile<const MR: usize, const NR: usize>(w: &PackedInt8, run: Run) {
        let (a, rows, i0, store, b) = run;
        let block_len = w.k4 * BLOCK;
        let weights = w.packed.as_ptr().add(b * block_len);
        let first = a.as_ptr().add(i0 * rows.row_step);
        let groups = rows.segment / 4;
        let mut acc = [[_mm512_setzero_si512(); NR]; MR];
        for s in 0..rows.segments {
            let segment = first.add(s * rows.segment_step);
            let w_segment = weights.add(s * groups * 64);
            for g in 0..groups {
                let mut wv = [_mm512_setzero_si512(); NR];
                for (j, v) in wv.iter_mut().enumerate() {
                    *v = _mm512_loadu_si512(w_segment.add(j * block_len + g * 64).cast());
                }
                for (r, acc_r) in acc.iter_mut().enumerate() {
                    let at = segment.add(r * rows.row_step + g * 4);
                    let x = _mm512_set1_epi32(at.cast::<i32>().read_unaligned());
                    for (acc_rj, wj) in acc_r.iter_mut().zip(&wv) {
                        *acc_rj = _mm512_dpbusd_epi32(*acc_rj, x, *wj);
                    }
                }
            }
        }
        match store {
            Store::Sums(out) => {
                let ldo = w.out_stride();
                for (r, acc_r) in acc.iter().enumerate() {
                    let dst = out.as_mut_ptr().add((i0 + r) * ldo + b * BLOCK);
                    for (j, v) in acc_r.iter().enumerate() {
                        _mm512_storeu_si512(dst.add(j * BLOCK).cast(), *v);
                    }
                }
            }
            Store::Levels {
                out,
                stride,
                epilogue,
            } => {
                for j in 0..NR {
                    let c0 = (b + j) * BLOCK;
                    let valid = BLOCK.min(w.n.saturating_sub(c0));
                    let mask = ((1u32 << valid) - 1) as __mmask16;
                    for (r, acc_r) in acc.iter().enumerate() {
                        let levels = levels(acc_r[j], epilogue, c0);
                        let dst = out.as_mut_ptr().add((i0 + r) * *stride + c0);
                        _mm512_mask_cvtepi32_storeu_epi8(dst.cast(), mask, levels);
                    }
                }
            }
        }
    }

    /// One row of a tile block's sums (32 outputs from `c0`, those from `n` on padding) through
    /// the epilogue into `out`'s first `n` bytes.
    #[target_feature(enable = "avx512f,avx512bw")]
    pub(super) unsafe fn store_levels(
        sums: &[i32],
        c0: usize,
        n: usize,
        e: &Fused,
        out: &mut [u8],
    ) {
        for (j, block) in sums.chunks_exact(BLOCK).enumerate() {
            let c = c0 + j * BLOCK;
            if c >= n {
                break;
            }
            let valid = BLOCK.min(n - c);
            assert!(out.len() >= c + valid && e.offsets.len() >= c + BLOCK);
            let levels = levels(_mm512_loadu_si512(block.as_ptr().cast()), e, c);
            let mask = ((1u32 << valid) - 1) as __mmask16;
            _mm512_mask_cvtepi32_storeu_epi8(out.as_mut_ptr().add(c).cast(), mask, levels);
        }
    }

    /// `OutputGrid::level_of_quotient((sum - offset) * multiplier + bias)` for the 16 channels
    /// from `c0`, as `i32` levels: the scalar loop's operations in its order.
    #[inline]
    #[target_feature(enable = "avx512f,avx512bw")]
    unsafe fn levels(sums: __m512i, e: &Fused, c0: usize) -> __m512i {
        let offsets = _mm512_loadu_si512(e.offsets.as_ptr().add(c0).cast());
        let multipliers = _mm512_loadu_ps(e.multipliers.as_ptr().add(c0));
        let biases = _mm512_loadu_ps(e.biases.as_ptr().add(c0));
        let t = _mm512_cvtepi32_ps(_mm512_sub_epi32(sums, offsets));
        let t = _mm512_add_ps(_mm512_mul_ps(t, multipliers), biases);
        let t = _mm512_min_ps(
            _mm512_max_ps(t, _mm512_set1_ps(-LIMIT)),
            _mm512_set1_ps(LIMIT),
        );
        let magic = _mm512_set1_ps(12_582_912.0);
        let t = _mm512_sub_ps(_mm512_add_ps(t, magic), magic);
        let t = _mm512_add_ps(t, _mm512_set1_ps(e.grid.zero_point));
        let t = _mm512_max_ps(t, _mm512_set1_ps(e.grid.low));
        let t = _mm512_min_ps(t, _mm512_set1_ps(e.grid.high));
        let bits = _mm512_castps_si512(_mm512_add_ps(t, _mm512_set1_ps(8_388_608.0)));
        _mm512_and_si512(bits, _mm512_set1_epi32(0xff))
    }
}

/// An unsigned activation grid as the epilogue writes it: `q = clamp(round(t / scale) +
/// zero_point, low, high)`, rounding half to even.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct OutputGrid {
    pub scale: f32,
    pub zero_point: f32,
    /// The zero point when a ReLU follows (`relu(x)` on the grid is `max(q, zero_point)`:
    /// quantization is monotone and maps 0 to the zero point), else 0.
    pub low: f32,
    /// `2^bits - 1`.
    pub high: f32,
}

impl OutputGrid {
    /// The level of `t`, computed as the simulation computes it: `t / scale`, rounded half to
    /// even, plus the zero point, clamped.
    #[inline(always)]
    pub fn level(&self, t: f32) -> u8 {
        self.level_of_quotient(t / self.scale)
    }

    /// The level of a value already divided by the scale.
    #[inline(always)]
    pub fn level_of_quotient(&self, quotient: f32) -> u8 {
        let v = round_half_even(quotient.clamp(-LIMIT, LIMIT));
        let level = (v + self.zero_point).clamp(self.low, self.high);
        // A whole number in 0..=255 plus 2^23 holds it in its low mantissa bits: read there, as
        // a cast (saturating in Rust) is not vectorised.
        ((level + 8_388_608.0).to_bits() & 0xff) as u8
    }
}

/// Beyond this the level is clamped anyway; inside it the rounding below is exact.
const LIMIT: f32 = 4_194_304.0; // 2^22

/// Rounds half to even for `|v| <= 2^22` (the result of adding and removing `1.5 * 2^23` in
/// round-to-nearest-even arithmetic), in plain adds the compiler vectorises on any target
/// (`f32::round_ties_even` becomes a library call per value without SSE4.1).
#[inline(always)]
fn round_half_even(v: f32) -> f32 {
    const MAGIC: f32 = 12_582_912.0; // 1.5 * 2^23
    (v + MAGIC) - MAGIC
}

/// What turns a row of sums into the next layer's levels: per output channel,
/// `t = (sum - z_x * row_sum) * multiplier + bias`, then BatchNorm when it is not folded
/// (`((t - mean) / std) * gamma + beta`, burn's order), then `grid`.
#[derive(Debug, Clone)]
pub struct Epilogue {
    /// `z_x * row_sum` per channel.
    offsets: Vec<i32>,
    /// `s_x * s_w` per channel, and the bias.
    multipliers: Vec<f32>,
    biases: Vec<f32>,
    batch_norm: Option<BatchNormAffine>,
    grid: OutputGrid,
    /// Without BatchNorm, `multiplier / scale` and `bias / scale`: the division by the grid's
    /// scale folded in (one `f32` rounding instead of two: within the integer sums' own
    /// difference from the simulation). Padded to whole blocks of 16, like `padded_offsets`.
    quotient: Option<(Vec<f32>, Vec<f32>)>,
    /// `offsets` padded to whole blocks.
    padded_offsets: Vec<i32>,
}

/// BatchNorm's running statistics per channel, `std = sqrt(var + eps)` precomputed.
#[derive(Debug, Clone)]
pub struct BatchNormAffine {
    pub mean: Vec<f32>,
    pub std: Vec<f32>,
    pub gamma: Vec<f32>,
    pub beta: Vec<f32>,
}

impl Epilogue {
    /// The epilogue of a layer whose weights have `row_sums`, reading levels with zero point
    /// `z_x`, landing on `grid`.
    pub fn new(
        row_sums: &[i32],
        z_x: i32,
        multipliers: Vec<f32>,
        biases: Vec<f32>,
        batch_norm: Option<BatchNormAffine>,
        grid: OutputGrid,
    ) -> Self {
        let n = row_sums.len();
        assert!(
            multipliers.len() == n && biases.len() == n,
            "one multiplier and bias per row"
        );
        let padded = n.div_ceil(BLOCK) * BLOCK;
        let divided = |v: &[f32]| -> Vec<f32> {
            let mut out: Vec<f32> = v
                .iter()
                .map(|&x| (x as f64 / grid.scale as f64) as f32)
                .collect();
            out.resize(padded, 0.0);
            out
        };
        let quotient = batch_norm
            .is_none()
            .then(|| (divided(&multipliers), divided(&biases)));
        let offsets: Vec<i32> = row_sums.iter().map(|s| z_x * s).collect();
        let mut padded_offsets = offsets.clone();
        padded_offsets.resize(padded, 0);
        Self {
            padded_offsets,
            offsets,
            multipliers,
            biases,
            batch_norm,
            grid,
            quotient,
        }
    }

    /// The form a tile applies in registers (none with BatchNorm to apply).
    #[cfg(target_arch = "x86_64")]
    fn fused(&self) -> Option<Fused<'_>> {
        let (multipliers, biases) = self.quotient.as_ref()?;
        Some(Fused {
            offsets: &self.padded_offsets,
            multipliers,
            biases,
            grid: self.grid,
        })
    }

    /// Rows of sums (`sum_stride` apart) as the float values they stand for (a layer whose
    /// output is added to another before it is rounded): `out` holds [`len`](Self::len) per row.
    pub fn to_floats(&self, (sums, sum_stride): (&[i32], usize), out: &mut [f32]) {
        let n = self.len();
        for (s, o) in sums.chunks(sum_stride).zip(out.chunks_mut(n)) {
            for (c, o) in o.iter_mut().enumerate() {
                let t = (s[c] - self.offsets[c]) as f32 * self.multipliers[c] + self.biases[c];
                *o = match &self.batch_norm {
                    Some(bn) => ((t - bn.mean[c]) / bn.std[c]) * bn.gamma[c] + bn.beta[c],
                    None => t,
                };
            }
        }
    }

    /// Output channels.
    pub fn len(&self) -> usize {
        self.offsets.len()
    }

    pub fn is_empty(&self) -> bool {
        self.offsets.is_empty()
    }

    /// Rows of sums (`sum_stride` apart) onto the grid: `out` holds the rows' levels,
    /// [`len`](Self::len) each, `out_stride` apart (the tail of each row left as it is).
    pub fn to_levels(&self, path: Int8Path, sums: (&[i32], usize), out: (&mut [u8], usize)) {
        match path {
            #[cfg(target_arch = "x86_64")]
            _ if path.wide() => {
                // SAFETY: AVX-512 is present (VNNI implies it).
                unsafe { self.rows_avx512(sums, out) }
            }
            _ => self.rows(sums, out),
        }
    }

    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx512f,avx512bw")]
    unsafe fn rows_avx512(&self, sums: (&[i32], usize), out: (&mut [u8], usize)) {
        self.rows(sums, out)
    }

    /// [`Self::to_levels`]' loops, inlined into each instruction set's copy.
    #[inline(always)]
    fn rows(&self, (sums, sum_stride): (&[i32], usize), (out, out_stride): (&mut [u8], usize)) {
        let (n, grid) = (self.len(), self.grid);
        let offsets = &self.offsets[..n];
        for (s, o) in sums.chunks(sum_stride).zip(out.chunks_mut(out_stride)) {
            let (s, o) = (&s[..n], &mut o[..n]);
            match (&self.quotient, &self.batch_norm) {
                // The common case, one loop over slices so it vectorises.
                (Some((m, b)), _) => {
                    let (m, b) = (&m[..n], &b[..n]);
                    for c in 0..n {
                        let v = (s[c] - offsets[c]) as f32 * m[c] + b[c];
                        o[c] = grid.level_of_quotient(v);
                    }
                }
                (None, Some(bn)) => {
                    for c in 0..n {
                        let t = (s[c] - offsets[c]) as f32 * self.multipliers[c] + self.biases[c];
                        let t = ((t - bn.mean[c]) / bn.std[c]) * bn.gamma[c] + bn.beta[c];
                        o[c] = grid.level(t);
                    }
                }
                (None, None) => unreachable!("an epilogue without BatchNorm has its quotients"),
            }
        }
    }
}

/// One sample's planes `[c][plane]` onto `grid`, written pixel-major `[plane][c]` (the first
/// layer's float output, quantized).
pub fn quantize_to_pixels(
    path: Int8Path,
    values: &[f32],
    shape: [usize; 2],
    grid: &OutputGrid,
    out: &mut [u8],
) {
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx512f,avx512bw")]
    unsafe fn wide(values: &[f32], shape: [usize; 2], grid: &OutputGrid, out: &mut [u8]) {
        to_pixels(values, shape, grid, out)
    }
    match path {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: AVX-512 is present (VNNI implies it).
        _ if path.wide() => unsafe { wide(values, shape, grid, out) },
        _ => to_pixels(values, shape, grid, out),
    }
}

/// [`quantize_to_pixels`]' loops, inlined into each instruction set's copy.
#[inline(always)]
fn to_pixels(values: &[f32], [plane, c]: [usize; 2], grid: &OutputGrid, out: &mut [u8]) {
    /// Pixels per block: each channel's run is quantized in one vectorised loop, then the
    /// block is transposed (a loop writing `c` apart does not vectorise).
    const PIXELS: usize = 64;
    let grid = *grid;
    if plane == 1 || c == 1 {
        // Both orders are the same (a flattened MLP input, a grayscale image): no transpose.
        for (d, &v) in out[..plane * c].iter_mut().zip(&values[..plane * c]) {
            *d = grid.level(v);
        }
        return;
    }
    let mut block = vec![0u8; c * PIXELS];
    for p0 in (0..plane).step_by(PIXELS) {
        let len = PIXELS.min(plane - p0);
        for ch in 0..c {
            let src = &values[ch * plane + p0..][..len];
            let dst = &mut block[ch * PIXELS..][..len];
            for (d, &v) in dst.iter_mut().zip(src) {
                *d = grid.level(v);
            }
        }
        for p in 0..len {
            let dst = &mut out[(p0 + p) * c..][..c];
            for (ch, d) in dst.iter_mut().enumerate() {
                *d = block[ch * PIXELS + p];
            }
        }
    }
}

/// The output size of a `[kernel, stride, padding]` window over `size` pixels.
pub fn window_out(size: usize, [kernel, stride, padding]: [usize; 3]) -> usize {
    (size + 2 * padding).saturating_sub(kernel) / stride + 1
}

/// One sample's convolution windows as rows (the reference the in-place reading is tested
/// against): `input` is `[h][w][c]` levels, each output pixel
/// gets a row of `[ky][kx][c]` (`fill`, the grid's zero point, where the window leaves the
/// image), `row_stride` long with the tail zero.
#[cfg(test)]
fn unfold(
    input: &[u8],
    [h, w, c]: [usize; 3],
    window: [usize; 3],
    fill: u8,
    row_stride: usize,
    out: &mut [u8],
) {
    let [kernel, stride, padding] = window;
    let (oh, ow) = (window_out(h, window), window_out(w, window));
    assert!(input.len() >= h * w * c && out.len() >= oh * ow * row_stride);
    let run = kernel * c; // one window row: `kernel` neighbouring pixels, contiguous in `input`
    for oy in 0..oh {
        for ox in 0..ow {
            let row = &mut out[(oy * ow + ox) * row_stride..][..row_stride];
            let x0 = (ox * stride) as isize - padding as isize;
            // The window's columns inside the image, `kx0..kx1`.
            let kx0 = (-x0).clamp(0, kernel as isize) as usize;
            let kx1 = (w as isize - x0).clamp(0, kernel as isize) as usize;
            for ky in 0..kernel {
                let iy = (oy * stride + ky) as isize - padding as isize;
                let dst = &mut row[ky * run..][..run];
                if iy < 0 || iy as usize >= h || kx0 >= kx1 {
                    dst.fill(fill);
                    continue;
                }
                dst[..kx0 * c].fill(fill);
                dst[kx1 * c..].fill(fill);
                let at = (iy as usize * w + (x0 + kx0 as isize) as usize) * c;
                dst[kx0 * c..kx1 * c].copy_from_slice(&input[at..at + (kx1 - kx0) * c]);
            }
            row[kernel * run..].fill(0);
        }
    }
}

/// A depthwise convolution's sums (one `kernel x kernel` filter per channel) of `[h][w][c]`
/// levels, `fill` (the zero point's level) outside the image: `out` is `[h'][w'][c]`, each
/// `sum_taps q * l` with `weights` `[c][kernel * kernel]`. The loop runs across channels, which
/// lie side by side, so it vectorises.
pub fn depthwise_sums(
    input: &[u8],
    [h, w, c]: [usize; 3],
    window: [usize; 3],
    (weights, fill): (&[i8], u8),
    out: &mut [i32],
) {
    let [kernel, stride, padding] = window;
    let (oh, ow) = (window_out(h, window), window_out(w, window));
    let taps = kernel * kernel;
    // `[tap][c]`, so each tap's weights for all channels are contiguous.
    let by_tap: Vec<i32> = (0..taps * c)
        .map(|i| weights[(i % c) * taps + i / c] as i32)
        .collect();
    let border = vec![fill; c];
    for oy in 0..oh {
        for ox in 0..ow {
            let acc = &mut out[(oy * ow + ox) * c..][..c];
            acc.fill(0);
            for ky in 0..kernel {
                let iy = (oy * stride + ky).checked_sub(padding).filter(|&y| y < h);
                for kx in 0..kernel {
                    let ix = (ox * stride + kx).checked_sub(padding).filter(|&x| x < w);
                    let x = match (iy, ix) {
                        (Some(iy), Some(ix)) => &input[(iy * w + ix) * c..][..c],
                        _ => &border[..],
                    };
                    let l = &by_tap[(ky * kernel + kx) * c..][..c];
                    for ((a, &q), &l) in acc.iter_mut().zip(x).zip(l) {
                        *a += q as i32 * l;
                    }
                }
            }
        }
    }
}

/// Max-pooling of `[h][w][c]` levels over `[kernel, stride, padding]` windows (the padding
/// never wins, as burn pads with minus infinity; odd edges dropped): on a grid, the maximum of
/// the levels is the level of the maximum.
pub fn max_pool(input: &[u8], [h, w, c]: [usize; 3], window: [usize; 3], out: &mut [u8]) {
    let [kernel, stride, padding] = window;
    let (oh, ow) = (window_out(h, window), window_out(w, window));
    if [kernel, stride, padding] == [2, 2, 0] {
        return crate::pixels::pool_2x2(input, w * c, [oh, ow, c], u8::max, out);
    }
    for oy in 0..oh {
        for ox in 0..ow {
            let dst = &mut out[(oy * ow + ox) * c..][..c];
            dst.fill(0);
            for ky in 0..kernel {
                let Some(iy) = (oy * stride + ky).checked_sub(padding).filter(|&y| y < h) else {
                    continue;
                };
                for kx in 0..kernel {
                    let Some(ix) = (ox * stride + kx).checked_sub(padding).filter(|&x| x < w)
                    else {
                        continue;
                    };
                    let src = &input[(iy * w + ix) * c..][..c];
                    for (d, &v) in dst.iter_mut().zip(src) {
                        *d = (*d).max(v);
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn levels(n: usize, seed: u64) -> Vec<i8> {
        let mut s = seed;
        (0..n)
            .map(|_| {
                s = s
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                ((s >> 33) % 255) as i8 as i16 as i8
            })
            .map(|l| l.max(-127))
            .collect()
    }

    fn activations(m: usize, k: usize, stride: usize, seed: u64) -> Vec<u8> {
        let values = levels(m * k, seed);
        let mut a = vec![0u8; m * stride];
        for i in 0..m {
            for c in 0..k {
                a[i * stride + c] = values[i * k + c] as u8;
            }
        }
        a
    }

    /// Every path; on a CPU without AMX (or VNNI) those paths run what the CPU has.
    const ALL_PATHS: [Int8Path; 3] = [Int8Path::Portable, Int8Path::Vnni, Int8Path::Amx];

    /// The tiles run wherever Linux reports AMX-INT8: a CPU that has them is not left on
    /// VNNI unnoticed (the paths' tests would then compare VNNI with itself).
    #[test]
    #[cfg(target_os = "linux")]
    fn amx_runs_where_the_cpu_has_it() {
        let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let flags = cpuinfo.lines().find(|l| l.starts_with("flags"));
        let listed = flags.is_some_and(|f| {
            let flags: Vec<&str> = f.split_whitespace().collect();
            flags.contains(&"amx_int8") && flags.contains(&"amx_tile")
        });
        assert_eq!(crate::amx::usable(), listed && Int8Path::vnni_available());
        if crate::amx::usable() && std::env::var(INT8_PATH_ENV).is_err() {
            assert_eq!(Int8Path::detect(), Int8Path::Amx);
        }
    }

    /// Every path against the plain definition, at shapes off every tile and block size.
    #[test]
    fn products_are_exact_on_every_path_at_odd_shapes() {
        for (m, n, k) in [
            (1, 1, 1),
            (7, 17, 5),
            (13, 33, 150),
            (6, 64, 288),
            (25, 70, 9),
            // AMX tiles: whole and partial tiles of rows, outputs and fan-in.
            (16, 16, 64),
            (33, 47, 130),
            (48, 100, 784),
        ] {
            let w = levels(n * k, 7 + k as u64);
            let packed = PackedInt8::new(&w, n, k);
            let a = activations(m, k, packed.row_stride(), 11 + m as u64);
            let mut expected = vec![0i32; m * n];
            for i in 0..m {
                for j in 0..n {
                    expected[i * n + j] = (0..k)
                        .map(|c| a[i * packed.row_stride() + c] as i32 * w[j * k + c] as i32)
                        .sum();
                }
            }
            let rows = Rows::dense(packed.row_stride());
            for path in ALL_PATHS {
                let mut out = vec![-1i32; m * packed.out_stride()];
                packed.gemm(path, &a, rows, m, &mut out);
                for i in 0..m {
                    let row = &out[i * packed.out_stride()..][..n];
                    assert_eq!(
                        row,
                        &expected[i * n..(i + 1) * n],
                        "{path:?} [{m}, {n}, {k}]"
                    );
                }
            }
        }
    }

    #[test]
    fn row_sums_are_the_levels_sums() {
        let packed = PackedInt8::new(&[1, -2, 3, 127, -127, 5], 2, 3);
        assert_eq!(packed.row_sums(), &[2, 5]);
    }

    #[test]
    fn rounding_is_half_to_even_as_the_simulation_rounds() {
        for v in [
            -2.5f32, -1.5, -0.5, 0.5, 1.5, 2.5, 3.4999998, 254.5, 255.5, 1e-8, -1e-8, 7.0,
        ] {
            assert_eq!(round_half_even(v), v.round_ties_even(), "{v}");
        }
        let grid = OutputGrid {
            scale: 0.1,
            zero_point: 3.0,
            low: 3.0,
            high: 255.0,
        };
        assert_eq!(grid.level(-5.0), 3, "a ReLU'd negative is the zero point");
        assert_eq!(grid.level(1e30), 255);
        assert_eq!(grid.level(f32::NEG_INFINITY), 3);
        // Two channels of two pixels, written pixel-major.
        let values = [0.25f32, -0.3, 2.0, 40.0];
        let mut wide = [0u8; 4];
        let mut narrow = [0u8; 4];
        quantize_to_pixels(Int8Path::detect(), &values, [2, 2], &grid, &mut wide);
        quantize_to_pixels(Int8Path::Portable, &values, [2, 2], &grid, &mut narrow);
        assert_eq!(wide, narrow);
        // 0.25 / 0.1 = 2.4999998 in f32: 2, plus the zero point.
        assert_eq!(wide, [5, 23, 3, 255]);
        // One pixel of four channels, or four pixels of one: no transpose, the same levels.
        for shape in [[1, 4], [4, 1]] {
            let mut flat = [0u8; 4];
            quantize_to_pixels(Int8Path::detect(), &values, shape, &grid, &mut flat);
            assert_eq!(flat, [5, 3, 23, 255], "{shape:?}");
        }
    }

    #[test]
    fn unfolding_fills_the_border_with_the_zero_point_and_zeroes_the_tail() {
        // 2x2 image, 1 channel, 3x3 window, padding 1: the top-left row sees three fills.
        let input = [1u8, 2, 3, 4];
        let window = [3, 1, 1];
        let mut out = vec![9u8; 4 * 12];
        unfold(&input, [2, 2, 1], window, 7, 12, &mut out);
        assert_eq!(&out[..12], &[7, 7, 7, 7, 1, 2, 7, 3, 4, 0, 0, 0]);
        assert_eq!(&out[36..48], &[1, 2, 7, 3, 4, 7, 7, 7, 7, 0, 0, 0]);
        let mut pooled = [0u8; 2];
        max_pool(&[1, 9, 5, 2, 3, 4, 8, 0], [2, 2, 2], [2, 2, 0], &mut pooled);
        assert_eq!(pooled, [8, 9]);
        // 3x3 windows, stride 2, padding 1 over a 3x3 image: 2x2 outputs, the padding ignored.
        let image = [1u8, 2, 3, 4, 5, 6, 7, 8, 9];
        let mut pooled = [0u8; 4];
        max_pool(&image, [3, 3, 1], [3, 2, 1], &mut pooled);
        assert_eq!(pooled, [5, 6, 8, 9]);
        // 2x2 windows over an odd 5x7 image of 3 channels: the last row and column dropped.
        let (h, w, c) = (5, 7, 3);
        let image = activations(h * w, c, c, 9);
        let mut pooled = vec![0u8; 2 * 3 * c];
        max_pool(&image, [h, w, c], [2, 2, 0], &mut pooled);
        for (i, &got) in pooled.iter().enumerate() {
            let (oy, ox, ch) = (i / (3 * c), i / c % 3, i % c);
            let at = |y: usize, x: usize| image[(y * w + x) * c + ch];
            let want = [(0, 0), (0, 1), (1, 0), (1, 1)]
                .map(|(dy, dx)| at(2 * oy + dy, 2 * ox + dx))
                .into_iter()
                .max();
            assert_eq!(Some(got), want, "output {i}");
        }
        // A depthwise 3x3 over two channels: the centre tap alone, and all ones with the fill.
        let two = [1u8, 10, 2, 20, 3, 30, 4, 40];
        let mut weights = [0i8; 18];
        weights[4] = 2;
        weights[9..].fill(1);
        let mut sums = [0i32; 8];
        depthwise_sums(&two, [2, 2, 2], [3, 1, 1], (&weights, 5), &mut sums);
        assert_eq!(sums[0], 2);
        assert_eq!(sums[1], 10 + 20 + 30 + 40 + 5 * 5);
    }

    /// A convolution read straight from the padded image (one run per window row) computes
    /// what the unfolded rows compute, and the epilogue in registers what the scalar one
    /// writes, on both paths.
    #[test]
    fn windows_read_in_place_and_fused_epilogues_match_the_unfolded_product() {
        let (h, w, c, n) = (5, 7, 8, 20);
        let window = [3, 1, 1];
        let k = 9 * c;
        let image = activations(h * w, c, c, 3);
        let levels_w = levels(n * k, 5);
        let packed = PackedInt8::new(&levels_w, n, k);
        let (oh, ow) = (window_out(h, window), window_out(w, window));
        let mut unfolded = vec![0u8; oh * ow * packed.row_stride()];
        unfold(
            &image,
            [h, w, c],
            window,
            9,
            packed.row_stride(),
            &mut unfolded,
        );
        // The image with a border of the fill value.
        let (hp, wp) = (h + 2, w + 2);
        let mut padded = vec![9u8; hp * wp * c];
        for y in 0..h {
            let dst = &mut padded[((y + 1) * wp + 1) * c..][..w * c];
            dst.copy_from_slice(&image[y * w * c..(y + 1) * w * c]);
        }
        let grid = OutputGrid {
            scale: 37.0,
            zero_point: 5.0,
            low: 5.0,
            high: 255.0,
        };
        let multipliers = (0..n).map(|i| 0.5 + i as f32 * 0.01).collect();
        let biases = (0..n).map(|i| i as f32 - 7.0).collect();
        let epilogue = Epilogue::new(packed.row_sums(), 9, multipliers, biases, None, grid);
        let mut expected = vec![0u8; oh * ow * n];
        let mut sums = vec![0i32; oh * ow * packed.out_stride()];
        let dense = Rows::dense(packed.row_stride());
        packed.gemm(Int8Path::Portable, &unfolded, dense, oh * ow, &mut sums);
        epilogue.to_levels(
            Int8Path::Portable,
            (&sums, packed.out_stride()),
            (&mut expected, n),
        );
        assert!(expected.iter().any(|&q| q > 5) && expected.contains(&5));
        for path in ALL_PATHS {
            let mut out = vec![0u8; oh * ow * n];
            for oy in 0..oh {
                let rows = Rows {
                    row_step: c,
                    segments: 3,
                    segment_step: wp * c,
                    segment: 3 * c,
                };
                let a = &padded[oy * wp * c..];
                let dst = &mut out[oy * ow * n..];
                packed.gemm_levels(path, (a, rows, ow), &epilogue, (dst, n));
            }
            assert_eq!(out, expected, "{path:?}");
            let mut whole = vec![0u8; oh * ow * n];
            packed.gemm_levels(
                path,
                (&unfolded, dense, oh * ow),
                &epilogue,
                (&mut whole, n),
            );
            assert_eq!(whole, expected, "{path:?} dense");
        }
    }
}
