//! A minimal GGUF writer for tests and fuzz seeds: a model's tensors under llama.cpp's Mamba2
//! names and layout (what `convert_hf_to_gguf.py` writes), so hostile variants can be made by
//! editing one field. Not part of the runtime (which only reads GGUF).

use transmamba::model::Tensor;
use transmamba::quant::QuantFormat;
use transmamba::Model;

/// A metadata value as written.
pub enum Kv {
    U32(u32),
    F32(f32),
    Str(String),
    Strs(Vec<String>),
}

/// One tensor as written: name, dims (innermost first), ggml type, data.
pub struct GgufTensor {
    pub name: String,
    pub dims: Vec<u64>,
    pub ggml_type: u32,
    pub data: Vec<u8>,
}

/// Serialises a GGUF v3 file (alignment 32).
pub fn gguf_bytes(kvs: &[(String, Kv)], tensors: &[GgufTensor]) -> Vec<u8> {
    let mut out = b"GGUF".to_vec();
    let str_ = |o: &mut Vec<u8>, s: &str| {
        o.extend((s.len() as u64).to_le_bytes());
        o.extend(s.as_bytes());
    };
    out.extend(3u32.to_le_bytes());
    out.extend((tensors.len() as u64).to_le_bytes());
    out.extend((kvs.len() as u64).to_le_bytes());
    for (k, v) in kvs {
        str_(&mut out, k);
        match v {
            Kv::U32(x) => {
                out.extend(4u32.to_le_bytes());
                out.extend(x.to_le_bytes());
            }
            Kv::F32(x) => {
                out.extend(6u32.to_le_bytes());
                out.extend(x.to_le_bytes());
            }
            Kv::Str(s) => {
                out.extend(8u32.to_le_bytes());
                str_(&mut out, s);
            }
            Kv::Strs(a) => {
                out.extend(9u32.to_le_bytes());
                out.extend(8u32.to_le_bytes());
                out.extend((a.len() as u64).to_le_bytes());
                for s in a {
                    str_(&mut out, s);
                }
            }
        }
    }
    let mut offset = 0u64;
    for t in tensors {
        str_(&mut out, &t.name);
        out.extend((t.dims.len() as u32).to_le_bytes());
        for d in &t.dims {
            out.extend(d.to_le_bytes());
        }
        out.extend(t.ggml_type.to_le_bytes());
        out.extend(offset.to_le_bytes());
        offset += (t.data.len() as u64).div_ceil(32) * 32;
    }
    out.resize(out.len().div_ceil(32) * 32, 0);
    for t in tensors {
        out.extend(&t.data);
        out.resize(out.len().div_ceil(32) * 32, 0);
    }
    out
}

/// How [`model_gguf_as`] stores the large matrices.
#[derive(Clone, Copy)]
pub enum GgufMatrices {
    F32,
    /// Rounded to nearest f16 (`--outtype f16`).
    F16,
    Quant(QuantFormat),
}

/// `model` (plain Mamba2: no MLP, no attention extras) as llama.cpp's converter writes it:
/// matrices in `matrices` (None: F32; Some: their q8_0 / q4_0 blocks), everything else F32.
pub fn model_gguf(model: &Model, matrices: Option<QuantFormat>) -> Vec<u8> {
    model_gguf_as(
        model,
        matrices.map_or(GgufMatrices::F32, GgufMatrices::Quant),
    )
}

/// [`model_gguf`] with the matrices stored as `matrices` says.
pub fn model_gguf_as(model: &Model, matrices: GgufMatrices) -> Vec<u8> {
    let c = &model.config;
    let kvs = vec![
        ("general.architecture".to_string(), Kv::Str("mamba2".into())),
        (
            "mamba2.embedding_length".into(),
            Kv::U32(c.hidden_size as u32),
        ),
        ("mamba2.block_count".into(), Kv::U32(c.num_layers as u32)),
        (
            "mamba2.ssm.conv_kernel".into(),
            Kv::U32(c.conv_kernel as u32),
        ),
        ("mamba2.ssm.inner_size".into(), Kv::U32(c.d_inner() as u32)),
        ("mamba2.ssm.state_size".into(), Kv::U32(c.state_size as u32)),
        (
            "mamba2.ssm.time_step_rank".into(),
            Kv::U32(c.num_heads as u32),
        ),
        ("mamba2.ssm.group_count".into(), Kv::U32(c.n_groups as u32)),
        (
            "mamba2.attention.layer_norm_rms_epsilon".into(),
            Kv::F32(c.layer_norm_epsilon),
        ),
    ];
    let f32s = |v: &[f32]| v.iter().flat_map(|x| x.to_le_bytes()).collect::<Vec<u8>>();
    let vector = |name: String, dims: Vec<u64>, v: &[f32]| GgufTensor {
        name,
        dims,
        ggml_type: 0,
        data: f32s(v),
    };
    let matrix = |name: String, t: &Tensor| {
        let dims = vec![t.shape[1] as u64, t.shape[0] as u64];
        match matrices {
            GgufMatrices::F32 => vector(name, dims, &t.values()),
            GgufMatrices::F16 => GgufTensor {
                name,
                dims,
                ggml_type: 1,
                data: t
                    .values()
                    .iter()
                    .flat_map(|&x| half::f16::from_f32(x).to_le_bytes())
                    .collect(),
            },
            GgufMatrices::Quant(q) => GgufTensor {
                name,
                dims,
                ggml_type: if q == QuantFormat::Q8_0 { 8 } else { 2 },
                data: t.quantized("m", q).expect("quantizable").bytes.clone(),
            },
        }
    };
    let mut tensors = vec![matrix("token_embd.weight".into(), &model.embedding)];
    let (h, g, di) = (c.num_heads as u64, c.n_groups as u64, c.d_inner() as u64);
    for (i, l) in model.layers.iter().enumerate() {
        let b = format!("blk.{i}.");
        let a: Vec<f32> = l.a_log.data.iter().map(|x| -x.exp()).collect();
        tensors.push(vector(format!("{b}ssm_a"), vec![1, h], &a));
        tensors.push(vector(format!("{b}ssm_d"), vec![1, h], &l.d.data));
        if let Some(cb) = &l.conv_bias {
            tensors.push(vector(
                format!("{b}ssm_conv1d.bias"),
                vec![cb.len() as u64],
                &cb.data,
            ));
        }
        let cw = &l.conv_weight;
        tensors.push(vector(
            format!("{b}ssm_conv1d.weight"),
            vec![cw.shape[1] as u64, cw.shape[0] as u64],
            &cw.data,
        ));
        tensors.push(vector(format!("{b}ssm_dt.bias"), vec![h], &l.dt_bias.data));
        tensors.push(matrix(format!("{b}ssm_in.weight"), &l.in_proj));
        tensors.push(vector(
            format!("{b}ssm_norm.weight"),
            vec![di / g, g],
            &l.gated_norm.data,
        ));
        tensors.push(matrix(format!("{b}ssm_out.weight"), &l.out_proj));
        tensors.push(vector(
            format!("{b}attn_norm.weight"),
            vec![l.norm.len() as u64],
            &l.norm.data,
        ));
    }
    tensors.push(vector(
        "output_norm.weight".into(),
        vec![model.norm_f.len() as u64],
        &model.norm_f.data,
    ));
    if let Some(h) = &model.lm_head {
        tensors.push(matrix("output.weight".into(), h));
    }
    gguf_bytes(&kvs, &tensors)
}
