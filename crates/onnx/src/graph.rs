//! The graph builder: nodes, initialisers and the value names that connect them, with the
//! operations our models are made of (convolution + BatchNorm, linear layers, activations,
//! pooling) and the quantize-dequantize pairs of an integer model.

use std::collections::BTreeSet;

use crate::proto::{
    attribute_proto::AttributeType, tensor_proto::DataType, AttributeProto, NodeProto, TensorProto,
};
use crate::{ExportError, Grid, Precision, Source};

/// Where the graph's parameters and quantization come from, and the graph made so far.
pub(crate) struct Builder<'a> {
    source: &'a Source,
    pub nodes: Vec<NodeProto>,
    pub initializers: Vec<TensorProto>,
    names: BTreeSet<String>,
    /// Whether a 4-bit type is used (QuantizeLinear/DequantizeLinear need opset 21).
    pub uses_int4: bool,
    /// Every activation point the model passed, for the check that the file's grids all
    /// found their point.
    pub points: BTreeSet<String>,
}

/// A convolution's geometry (square kernels, symmetric padding, as every model here has).
#[derive(Debug, Clone, Copy)]
pub(crate) struct ConvGeometry {
    pub stride: usize,
    pub padding: usize,
    /// `groups = channels` for a depthwise convolution, else 1.
    pub groups: usize,
}

impl ConvGeometry {
    pub fn new(stride: usize, padding: usize) -> Self {
        Self {
            stride,
            padding,
            groups: 1,
        }
    }
}

pub(crate) fn ints(name: &str, values: &[i64]) -> AttributeProto {
    AttributeProto {
        name: Some(name.into()),
        r#type: Some(AttributeType::Ints as i32),
        ints: values.to_vec(),
        ..Default::default()
    }
}

pub(crate) fn int(name: &str, value: i64) -> AttributeProto {
    AttributeProto {
        name: Some(name.into()),
        r#type: Some(AttributeType::Int as i32),
        i: Some(value),
        ..Default::default()
    }
}

fn float(name: &str, value: f32) -> AttributeProto {
    AttributeProto {
        name: Some(name.into()),
        r#type: Some(AttributeType::Float as i32),
        f: Some(value),
        ..Default::default()
    }
}

/// An initialiser of `data_type` with its bytes as ONNX lays them out (`raw_data`, little
/// endian; 4-bit values two per byte, the first in the low nibble).
pub(crate) fn tensor(name: &str, dims: &[usize], data_type: DataType, raw: Vec<u8>) -> TensorProto {
    TensorProto {
        name: Some(name.into()),
        dims: dims.iter().map(|&d| d as i64).collect(),
        data_type: Some(data_type as i32),
        raw_data: Some(raw),
        ..Default::default()
    }
}

pub(crate) fn f32_bytes(values: &[f32]) -> Vec<u8> {
    values.iter().flat_map(|v| v.to_le_bytes()).collect()
}

/// Signed 4-bit values packed two per byte, the first in the low nibble (two's complement).
fn int4_bytes(levels: &[i8]) -> Vec<u8> {
    levels
        .chunks(2)
        .map(|pair| {
            let low = pair[0] as u8 & 0x0f;
            let high = pair.get(1).map_or(0, |&l| l as u8 & 0x0f);
            low | (high << 4)
        })
        .collect()
}

impl<'a> Builder<'a> {
    pub fn new(source: &'a Source) -> Self {
        Self {
            source,
            nodes: Vec::new(),
            initializers: Vec::new(),
            names: BTreeSet::new(),
            uses_int4: false,
            points: BTreeSet::new(),
        }
    }

    /// A value name not used yet, `hint` itself when free.
    fn fresh(&mut self, hint: &str) -> String {
        let mut name = hint.to_string();
        let mut n = 1;
        while self.names.contains(&name) {
            name = format!("{hint}:{n}");
            n += 1;
        }
        self.names.insert(name.clone());
        name
    }

    /// The architecture the graph is built for.
    pub fn spec(&self) -> models::ModelSpec {
        self.source.spec.clone()
    }

    /// Reserves `name` (the graph input).
    pub fn reserve(&mut self, name: &str) {
        self.names.insert(name.to_string());
    }

    /// Adds a node of `op` reading `inputs`; returns its output's name (`hint`, made unique).
    pub fn node(
        &mut self,
        op: &str,
        inputs: &[&str],
        attributes: Vec<AttributeProto>,
        hint: &str,
    ) -> String {
        let output = self.fresh(hint);
        self.nodes.push(NodeProto {
            op_type: Some(op.into()),
            name: Some(format!("{op}:{output}")),
            input: inputs.iter().map(|s| s.to_string()).collect(),
            output: vec![output.clone()],
            attribute: attributes,
            ..Default::default()
        });
        output
    }

    /// Adds an initialiser; returns its name.
    pub fn constant(&mut self, mut t: TensorProto) -> String {
        let name = self.fresh(t.name());
        t.name = Some(name.clone());
        self.initializers.push(t);
        name
    }

    /// The stored shape of parameter `path`.
    pub fn shape(&self, path: &str) -> Result<Vec<usize>, ExportError> {
        if let Some(q) = self.source.quantized.get(path) {
            return Ok(q.dims.clone());
        }
        self.source
            .tensors
            .get(path)
            .map(|t| t.shape.clone())
            .ok_or_else(|| ExportError::Missing(path.to_string()))
    }

    /// A float parameter as the graph computes with it (see [`Self::float_values`]).
    pub fn float(&mut self, path: &str) -> Result<String, ExportError> {
        let source: &'a Source = self.source;
        let t = source
            .tensors
            .get(path)
            .ok_or_else(|| ExportError::Missing(path.to_string()))?;
        Ok(self.float_values(path, &t.shape, &t.values))
    }

    /// Float values as the graph computes with them: an `f32` initialiser, or an `f16` one
    /// widened by a `Cast` (the model computes in `f32` with the rounded values, as our `.f16`
    /// loader does).
    fn float_values(&mut self, name: &str, dims: &[usize], values: &[f32]) -> String {
        match self.source.precision {
            Precision::F32 => self.constant(tensor(name, dims, DataType::Float, f32_bytes(values))),
            Precision::F16 => {
                let raw = values
                    .iter()
                    .flat_map(|&v| half::f16::from_f32(v).to_le_bytes())
                    .collect();
                let stored =
                    self.constant(tensor(&format!("{name}.f16"), dims, DataType::Float16, raw));
                let to = int("to", DataType::Float as i64);
                self.node("Cast", &[&stored], vec![to], name)
            }
        }
    }

    /// A weight (conv `[out, in, k, k]`, or a linear layer's as `[out, in]`): its integer
    /// levels and per-output-channel scales through `DequantizeLinear` when the file
    /// quantized it, else the float tensor. A linear layer's weight is laid out
    /// `[out, in]` (burn holds `[in, out]`) for `Gemm` with `transB = 1`.
    pub fn weight(&mut self, path: &str) -> Result<String, ExportError> {
        let source: &'a Source = self.source;
        let Some(q) = source.quantized.get(path) else {
            let t = source
                .tensors
                .get(path)
                .ok_or_else(|| ExportError::Missing(path.to_string()))?;
            if let [d_in, d_out] = t.shape[..] {
                // burn's `[in, out]` to `[out, in]`, as the quantized form stores it.
                let values: Vec<f32> = (0..d_in * d_out)
                    .map(|i| t.values[(i % d_in) * d_out + i / d_in])
                    .collect();
                return Ok(self.float_values(path, &[d_out, d_in], &values));
            }
            return Ok(self.float_values(path, &t.shape, &t.values));
        };
        let rows = q.scales.len();
        let (levels, data_type, zero) = match q.bits {
            8 => (
                q.levels.iter().map(|&l| l as u8).collect(),
                DataType::Int8,
                vec![0u8; rows],
            ),
            2 | 4 => {
                // 2-bit levels (-1..=1) are stored in the 4-bit type: ONNX's 2-bit types are
                // newer than the runtimes that deploy these models.
                self.uses_int4 = true;
                (
                    int4_bytes(&q.levels),
                    DataType::Int4,
                    vec![0u8; rows.div_ceil(2)],
                )
            }
            bits => return Err(ExportError::Unsupported(format!("{bits}-bit weights"))),
        };
        let dims = q.dims.clone();
        let stored = self.constant(tensor(&format!("{path}.levels"), &dims, data_type, levels));
        let scale = self.constant(tensor(
            &format!("{path}.scale"),
            &[rows],
            DataType::Float,
            f32_bytes(&q.scales),
        ));
        let zero = self.constant(tensor(
            &format!("{path}.zero_point"),
            &[rows],
            data_type,
            zero,
        ));
        Ok(self.node(
            "DequantizeLinear",
            &[&stored, &scale, &zero],
            vec![int("axis", 0)],
            path,
        ))
    }

    /// The activation the model continues with at `point`: `x` itself, or `x` on the
    /// file's grid (`QuantizeLinear` then `DequantizeLinear` on `UINT8`, with the grid's scale
    /// and zero point; a grid of fewer bits is then clipped to its own levels, which computes
    /// exactly its rounding and clamp).
    ///
    /// Why not `UINT4` for 4-bit grids: ONNX Runtime 1.32's QDQ optimiser moves such a pair
    /// across a max-pool and then refuses the graph ("Type 'tensor(uint4)' ... of operator
    /// (MaxPool) is invalid"), and TensorRT's 4-bit support is for weights only.
    pub fn point(&mut self, point: &str, x: &str) -> Result<String, ExportError> {
        self.points.insert(point.to_string());
        let Some(grid) = self.source.activations.get(point).copied() else {
            return Ok(x.to_string());
        };
        if !matches!(grid.bits, 2 | 4 | 8) {
            return Err(ExportError::Unsupported(format!(
                "{}-bit activations",
                grid.bits
            )));
        }
        let scale = self.constant(tensor(
            &format!("{point}.scale"),
            &[],
            DataType::Float,
            f32_bytes(&[grid.scale]),
        ));
        let zero = vec![grid.zero_point as u8];
        let zero = self.constant(tensor(
            &format!("{point}.zero_point"),
            &[],
            DataType::Uint8,
            zero,
        ));
        let q = self.node(
            "QuantizeLinear",
            &[x, &scale, &zero],
            vec![],
            &format!("{point}.quantized"),
        );
        let dq = self.node("DequantizeLinear", &[&q, &scale, &zero], vec![], point);
        if grid.bits < 8 {
            let (lo, hi) = grid_limits(&grid);
            return Ok(self.clip(&dq, lo, hi, &format!("{point}.{}bit", grid.bits)));
        }
        Ok(dq)
    }

    /// `min(max(x, lo), hi)`.
    pub fn clip(&mut self, x: &str, lo: f32, hi: f32, hint: &str) -> String {
        let lo = self.constant(tensor(
            &format!("{hint}.min"),
            &[],
            DataType::Float,
            f32_bytes(&[lo]),
        ));
        let hi = self.constant(tensor(
            &format!("{hint}.max"),
            &[],
            DataType::Float,
            f32_bytes(&[hi]),
        ));
        self.node("Clip", &[x, &lo, &hi], vec![], hint)
    }

    /// A bias-free convolution followed by BatchNorm (parameters `{name}.conv.weight` and
    /// `{name}.bn.*`, points `{name}.conv` and `{name}.bn`), or, in a file that folded
    /// BatchNorm, one convolution with the folded bias (stored in `{name}.bn.beta`).
    ///
    /// # Shapes
    /// - input: `[batch, c_in, h, w]`; output: `[batch, c_out, h', w']`
    pub fn conv_bn(
        &mut self,
        x: &str,
        name: &str,
        geometry: ConvGeometry,
    ) -> Result<String, ExportError> {
        let path = format!("{name}.conv.weight");
        let kernel = self.shape(&path)?[2];
        let w = self.weight(&path)?;
        let p = geometry.padding as i64;
        let attributes = vec![
            ints("kernel_shape", &[kernel as i64; 2]),
            ints("strides", &[geometry.stride as i64; 2]),
            ints("pads", &[p, p, p, p]),
            int("group", geometry.groups as i64),
        ];
        if self.source.fold_batchnorm {
            let bias = self.float(&format!("{name}.bn.beta"))?;
            let y = self.node("Conv", &[x, &w, &bias], attributes, &format!("{name}.conv"));
            return self.point(&format!("{name}.conv"), &y);
        }
        let y = self.node("Conv", &[x, &w], attributes, &format!("{name}.conv"));
        let y = self.point(&format!("{name}.conv"), &y)?;
        let bn: Vec<String> = ["gamma", "beta", "running_mean", "running_var"]
            .iter()
            .map(|p| self.float(&format!("{name}.bn.{p}")))
            .collect::<Result<_, _>>()?;
        let inputs: Vec<&str> = std::iter::once(y.as_str())
            .chain(bn.iter().map(String::as_str))
            .collect();
        let y = self.node(
            "BatchNormalization",
            &inputs,
            vec![float("epsilon", crate::BN_EPSILON)],
            &format!("{name}.bn"),
        );
        self.point(&format!("{name}.bn"), &y)
    }

    /// A linear layer `{name}.weight`, `{name}.bias` (`Gemm` with the weight as `[out, in]`).
    ///
    /// # Shapes
    /// - input: `[batch, d_in]`; output: `[batch, d_out]`
    pub fn linear(&mut self, x: &str, name: &str) -> Result<String, ExportError> {
        let w = self.weight(&format!("{name}.weight"))?;
        let b = self.float(&format!("{name}.bias"))?;
        Ok(self.node("Gemm", &[x, &w, &b], vec![int("transB", 1)], name))
    }

    pub fn relu(&mut self, x: &str, hint: &str) -> String {
        self.node("Relu", &[x], vec![], hint)
    }

    /// A `kernel x kernel` max-pool (floor of the output size, padding ignored by the max).
    pub fn max_pool(
        &mut self,
        x: &str,
        kernel: usize,
        stride: usize,
        pad: usize,
        hint: &str,
    ) -> String {
        let p = pad as i64;
        self.node(
            "MaxPool",
            &[x],
            vec![
                ints("kernel_shape", &[kernel as i64; 2]),
                ints("strides", &[stride as i64; 2]),
                ints("pads", &[p, p, p, p]),
            ],
            hint,
        )
    }

    /// `[batch, c, h, w]` to `[batch, c]`, the mean over each plane.
    pub fn global_average(&mut self, x: &str, hint: &str) -> String {
        let pooled = self.node("GlobalAveragePool", &[x], vec![], &format!("{hint}.pool"));
        self.flatten(&pooled, hint)
    }

    /// `[batch, ...]` to `[batch, features]`.
    pub fn flatten(&mut self, x: &str, hint: &str) -> String {
        self.node("Flatten", &[x], vec![int("axis", 1)], hint)
    }
}

/// The smallest and largest value of `grid`.
fn grid_limits(grid: &Grid) -> (f32, f32) {
    let z = grid.zero_point as f32;
    let top = ((1u32 << grid.bits) - 1) as f32;
    ((0.0 - z) * grid.scale, (top - z) * grid.scale)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn int4_packs_two_per_byte_low_nibble_first() {
        assert_eq!(int4_bytes(&[1, -1, -8, 7, 3]), vec![0xf1, 0x78, 0x03]);
    }
}
