//! Microbenchmark of decode matrix-vector designs (y = W x) on the default adapter: how W and
//! X are stored and read. It produced the design table in docs/performance-log.md ("Session 3");
//! the shipped kernels are shaders/matvec.wgsl and matvec_f16.wgsl.
//!
//!   cargo run --release -p transmamba --example matvec_designs
//!   O=16384 K=2048 ONLY=4rows cargo run --release -p transmamba --example matvec_designs
//!
//! O x K is the matrix (default 3352 x 768, mamba2-130m's in_proj), ONLY filters by name,
//! NW=8 rotates 8 copies of W (rgba32float designs; the working set leaves the L3 as in
//! decode), ROUNDS sets the rounds. Names starting `t_` are timed only: t_texStorageBF decodes
//! its packed halves with one AND or shift (a bf16-like layout, wrong values for f16 data),
//! the cheapest any 8-per-texel format could be.
//! Each design is checked against a CPU product, then timed: best of 4 interleaved rounds of
//! 20 dispatches in one submission.
#![allow(non_snake_case)]
use std::time::Instant;
use wgpu::util::DeviceExt;

fn main() {
    let K: u32 = std::env::var("K")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(768);
    let O: u32 = std::env::var("O")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(3352);
    let only = std::env::var("ONLY").unwrap_or_default();
    let inst = wgpu::Instance::new(wgpu::InstanceDescriptor::new_without_display_handle_from_env());
    let adapter = pollster::block_on(inst.request_adapter(&Default::default())).unwrap();
    let (device, queue) = pollster::block_on(adapter.request_device(&wgpu::DeviceDescriptor {
        required_features: wgpu::Features::SUBGROUP,
        required_limits: adapter.limits(),
        ..Default::default()
    }))
    .unwrap();
    let k4 = K / 4;
    let w: Vec<f32> = (0..(O * K))
        .map(|i| ((i * 7919) % 1000) as f32 / 1000.0 - 0.5)
        .collect();
    let x: Vec<f32> = (0..K).map(|i| ((i * 31) % 100) as f32 / 100.0).collect();
    let want: Vec<f32> = (0..O as usize)
        .map(|o| (0..K as usize).map(|k| w[o * K as usize + k] * x[k]).sum())
        .collect();
    let wbuf = device.create_buffer_init(&wgpu::util::BufferInitDescriptor {
        label: None,
        contents: bytemuck::cast_slice(&w),
        usage: wgpu::BufferUsages::STORAGE,
    });
    // packed f16 pairs
    let wh: Vec<u32> = w
        .chunks(2)
        .map(|c| {
            (half::f16::from_f32(c[0]).to_bits() as u32)
                | ((half::f16::from_f32(c[1]).to_bits() as u32) << 16)
        })
        .collect();
    let whbuf = device.create_buffer_init(&wgpu::util::BufferInitDescriptor {
        label: None,
        contents: bytemuck::cast_slice(&wh),
        usage: wgpu::BufferUsages::STORAGE,
    });
    let xbuf = device.create_buffer_init(&wgpu::util::BufferInitDescriptor {
        label: None,
        contents: bytemuck::cast_slice(&x),
        usage: wgpu::BufferUsages::STORAGE,
    });
    let xubo = device.create_buffer_init(&wgpu::util::BufferInitDescriptor {
        label: None,
        contents: bytemuck::cast_slice(&x),
        usage: wgpu::BufferUsages::UNIFORM,
    });
    let ybuf = device.create_buffer(&wgpu::BufferDescriptor {
        label: None,
        size: (O * 4) as u64,
        usage: wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_SRC,
        mapped_at_creation: false,
    });
    let rb = device.create_buffer(&wgpu::BufferDescriptor {
        label: None,
        size: (O * 4) as u64,
        usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
        mapped_at_creation: false,
    });
    // texture row-per-o layout: texel (k4, o)
    let mk_tex_f = |wdt: u32,
                    hgt: u32,
                    data: &[u8],
                    format: wgpu::TextureFormat,
                    usage: wgpu::TextureUsages| {
        let t = device.create_texture_with_data(
            &queue,
            &wgpu::TextureDescriptor {
                label: None,
                size: wgpu::Extent3d {
                    width: wdt,
                    height: hgt,
                    depth_or_array_layers: 1,
                },
                mip_level_count: 1,
                sample_count: 1,
                dimension: wgpu::TextureDimension::D2,
                format,
                usage,
                view_formats: &[],
            },
            wgpu::util::TextureDataOrder::LayerMajor,
            data,
        );
        t.create_view(&Default::default())
    };
    let tex_r = mk_tex_f(
        K,
        O,
        bytemuck::cast_slice(&w),
        wgpu::TextureFormat::R32Float,
        wgpu::TextureUsages::TEXTURE_BINDING,
    );
    let tex_u = mk_tex_f(
        K / 4,
        O,
        bytemuck::cast_slice(&w),
        wgpu::TextureFormat::Rgba32Uint,
        wgpu::TextureUsages::TEXTURE_BINDING,
    );
    let tex_s = mk_tex_f(
        K / 4,
        O,
        bytemuck::cast_slice(&w),
        wgpu::TextureFormat::Rgba32Float,
        wgpu::TextureUsages::STORAGE_BINDING,
    );
    let tex_us = mk_tex_f(
        K / 4,
        O,
        bytemuck::cast_slice(&w),
        wgpu::TextureFormat::Rgba32Uint,
        wgpu::TextureUsages::STORAGE_BINDING,
    );
    let tex_x = mk_tex_f(
        K / 4,
        1,
        bytemuck::cast_slice(&x),
        wgpu::TextureFormat::Rgba32Float,
        wgpu::TextureUsages::STORAGE_BINDING,
    );
    let tex_hs = mk_tex_f(
        K / 8,
        O,
        bytemuck::cast_slice(&wh),
        wgpu::TextureFormat::Rgba32Uint,
        wgpu::TextureUsages::STORAGE_BINDING,
    );
    let whh: Vec<u16> = w
        .iter()
        .map(|v| half::f16::from_f32(*v).to_bits())
        .collect();
    let tex_16s = mk_tex_f(
        K / 4,
        O,
        bytemuck::cast_slice(&whh),
        wgpu::TextureFormat::Rgba16Float,
        wgpu::TextureUsages::STORAGE_BINDING,
    );
    // tiled: tiles of 256 outputs; texel (slot, tile * K4 + i) = W[tile*256 + slot][4i..4i+4]
    let ntiles = O.div_ceil(256);
    let mut wtl = vec![0f32; (ntiles * 256 * K) as usize];
    for o in 0..O as usize {
        let (tile, slot) = (o / 256, o % 256);
        for q in 0..(K / 4) as usize {
            for c in 0..4 {
                wtl[((tile * (K / 4) as usize + q) * 256 + slot) * 4 + c] =
                    w[o * K as usize + q * 4 + c];
            }
        }
    }
    let tex_tl = mk_tex_f(
        256,
        ntiles * (K / 4),
        bytemuck::cast_slice(&wtl),
        wgpu::TextureFormat::Rgba32Float,
        wgpu::TextureUsages::STORAGE_BINDING,
    );
    let tex_h = mk_tex_f(
        K / 8,
        O,
        bytemuck::cast_slice(&wh),
        wgpu::TextureFormat::Rgba32Uint,
        wgpu::TextureUsages::TEXTURE_BINDING,
    );
    let mk_tex = |wdt: u32, hgt: u32, data: &[f32]| {
        let t = device.create_texture_with_data(
            &queue,
            &wgpu::TextureDescriptor {
                label: None,
                size: wgpu::Extent3d {
                    width: wdt,
                    height: hgt,
                    depth_or_array_layers: 1,
                },
                mip_level_count: 1,
                sample_count: 1,
                dimension: wgpu::TextureDimension::D2,
                format: wgpu::TextureFormat::Rgba32Float,
                usage: wgpu::TextureUsages::TEXTURE_BINDING,
                view_formats: &[],
            },
            wgpu::util::TextureDataOrder::LayerMajor,
            bytemuck::cast_slice(data),
        );
        t.create_view(&Default::default())
    };
    let tex = mk_tex(k4, O, &w);
    // transposed: texel (o, k4)
    let mut wt = vec![0f32; (O * K) as usize];
    for o in 0..O as usize {
        for q in 0..k4 as usize {
            for c in 0..4 {
                wt[(q * O as usize + o) * 4 + c] = w[o * K as usize + q * 4 + c];
            }
        }
    }
    let tex_t = mk_tex(O, k4, &wt);

    let header = format!(
        "const K: u32 = {K}u; const O: u32 = {O}u; const K4: u32 = {k4}u;\n\
         @group(0) @binding(0) var<storage, read> xs: array<f32>;\n\
         @group(0) @binding(1) var<storage, read_write> ys: array<f32>;\n"
    );
    // X as texels, n outputs per lane: (name, source, outputs per workgroup, W's kind).
    let generated: Vec<(String, String, u32, &str)> = [
        (4, "rgba32float"),
        (8, "rgba32float"),
        (12, "rgba32float"),
        (16, "rgba32float"),
        (4, "rgba32uint"),
        (8, "rgba32uint"),
        (8, "rgba16float"),
    ]
    .iter()
    .map(|&(n, format)| {
        let (tag, kind) = match format {
            "rgba32uint" => ("H8", "texhs"),
            "rgba16float" => ("RGBA16F", "tex16s"),
            _ => ("", "texs"),
        };
        let name = format!("texStorage{tag}_{n}rows_xtex");
        (name, xtex_design(n, format), 8 * n, kind)
    })
    .collect();
    let mut kernels: Vec<(&str, &str, u32, &str)> = vec![
        ("noop_1wg", "@group(0) @binding(2) var<storage, read> w: array<vec4<f32>>;
@compute @workgroup_size(8) fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) l: u32) {
  if (wid.x == 0u && l == 0u) { ys[0] = w[0].x + xs[0]; }
}", 1000000, "st"),
        ("texStorageU32bits_4rows_x_ubo", "@group(0) @binding(2) var w: texture_storage_2d<rgba32uint, read>; @group(0) @binding(3) var<uniform> xu: array<vec4<f32>, K4>;
@compute @workgroup_size(8) fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) l: u32) {
  let o = wid.x * 32u + l;
  let r0 = i32(min(o, O - 1u)); let r1 = i32(min(o + 8u, O - 1u)); let r2 = i32(min(o + 16u, O - 1u)); let r3 = i32(min(o + 24u, O - 1u));
  var c = vec4<f32>(0.0);
  for (var i = 0u; i < K4; i += 1u) {
    let xv = xu[i];
    let kk = i32(i);
    c += vec4<f32>(dot(xv, bitcast<vec4<f32>>(textureLoad(w, vec2<i32>(kk, r0)))), dot(xv, bitcast<vec4<f32>>(textureLoad(w, vec2<i32>(kk, r1)))), dot(xv, bitcast<vec4<f32>>(textureLoad(w, vec2<i32>(kk, r2)))), dot(xv, bitcast<vec4<f32>>(textureLoad(w, vec2<i32>(kk, r3)))));
  }
  if (o < O) { ys[o] = c.x; } if (o + 8u < O) { ys[o + 8u] = c.y; } if (o + 16u < O) { ys[o + 16u] = c.z; } if (o + 24u < O) { ys[o + 24u] = c.w; }
}", 32, "texus"),
        ("t_texStorageBF_4rows_x_ubo", "@group(0) @binding(2) var w: texture_storage_2d<rgba32uint, read>; @group(0) @binding(3) var<uniform> xu: array<vec4<f32>, K4>;
fn d(xe: vec4<f32>, xo: vec4<f32>, h: vec4<u32>) -> f32 {
  return dot(xe, bitcast<vec4<f32>>(h << vec4<u32>(16u))) + dot(xo, bitcast<vec4<f32>>(h & vec4<u32>(0xffff0000u)));
}
@compute @workgroup_size(8) fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) l: u32) {
  let o = wid.x * 32u + l;
  let r0 = i32(min(o, O - 1u)); let r1 = i32(min(o + 8u, O - 1u)); let r2 = i32(min(o + 16u, O - 1u)); let r3 = i32(min(o + 24u, O - 1u));
  var c = vec4<f32>(0.0);
  for (var i = 0u; i < K4 / 2u; i += 1u) {
    let xe = xu[2u * i]; let xo = xu[2u * i + 1u];
    let kk = i32(i);
    c += vec4<f32>(d(xe, xo, textureLoad(w, vec2<i32>(kk, r0))), d(xe, xo, textureLoad(w, vec2<i32>(kk, r1))), d(xe, xo, textureLoad(w, vec2<i32>(kk, r2))), d(xe, xo, textureLoad(w, vec2<i32>(kk, r3))));
  }
  if (o < O) { ys[o] = c.x; } if (o + 8u < O) { ys[o + 8u] = c.y; } if (o + 16u < O) { ys[o + 16u] = c.z; } if (o + 24u < O) { ys[o + 24u] = c.w; }
}", 32, "texhs"),
        ("texStorage_4rowsAcc_x_ubo", "@group(0) @binding(2) var w: texture_storage_2d<rgba32float, read>; @group(0) @binding(3) var<uniform> xu: array<vec4<f32>, K4>;
@compute @workgroup_size(8) fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) l: u32) {
  let o = wid.x * 32u + l;
  let r0 = i32(min(o, O - 1u)); let r1 = i32(min(o + 8u, O - 1u)); let r2 = i32(min(o + 16u, O - 1u)); let r3 = i32(min(o + 24u, O - 1u));
  var c0 = vec4<f32>(0.0); var c1 = vec4<f32>(0.0); var c2 = vec4<f32>(0.0); var c3 = vec4<f32>(0.0);
  for (var i = 0u; i < K4; i += 1u) {
    let xv = xu[i];
    let kk = i32(i);
    c0 += xv * textureLoad(w, vec2<i32>(kk, r0)); c1 += xv * textureLoad(w, vec2<i32>(kk, r1));
    c2 += xv * textureLoad(w, vec2<i32>(kk, r2)); c3 += xv * textureLoad(w, vec2<i32>(kk, r3));
  }
  let one = vec4<f32>(1.0);
  if (o < O) { ys[o] = dot(c0, one); } if (o + 8u < O) { ys[o + 8u] = dot(c1, one); } if (o + 16u < O) { ys[o + 16u] = dot(c2, one); } if (o + 24u < O) { ys[o + 24u] = dot(c3, one); }
}", 32, "texs"),
        ("texStorageH8Acc_4rows_x_ubo", "@group(0) @binding(2) var w: texture_storage_2d<rgba32uint, read>; @group(0) @binding(3) var<uniform> xu: array<vec4<f32>, K4>;
fn lo(h: vec4<u32>) -> vec4<f32> { return vec4<f32>(unpack2x16float(h.x), unpack2x16float(h.y)); }
fn hi(h: vec4<u32>) -> vec4<f32> { return vec4<f32>(unpack2x16float(h.z), unpack2x16float(h.w)); }
@compute @workgroup_size(8) fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) l: u32) {
  let o = wid.x * 32u + l;
  let r0 = i32(min(o, O - 1u)); let r1 = i32(min(o + 8u, O - 1u)); let r2 = i32(min(o + 16u, O - 1u)); let r3 = i32(min(o + 24u, O - 1u));
  var c0 = vec4<f32>(0.0); var c1 = vec4<f32>(0.0); var c2 = vec4<f32>(0.0); var c3 = vec4<f32>(0.0);
  for (var i = 0u; i < K4 / 2u; i += 1u) {
    let x0 = xu[2u * i]; let x1 = xu[2u * i + 1u];
    let kk = i32(i);
    let h0 = textureLoad(w, vec2<i32>(kk, r0)); let h1 = textureLoad(w, vec2<i32>(kk, r1));
    let h2 = textureLoad(w, vec2<i32>(kk, r2)); let h3 = textureLoad(w, vec2<i32>(kk, r3));
    c0 += x0 * lo(h0) + x1 * hi(h0); c1 += x0 * lo(h1) + x1 * hi(h1);
    c2 += x0 * lo(h2) + x1 * hi(h2); c3 += x0 * lo(h3) + x1 * hi(h3);
  }
  let one = vec4<f32>(1.0);
  if (o < O) { ys[o] = dot(c0, one); } if (o + 8u < O) { ys[o + 8u] = dot(c1, one); } if (o + 16u < O) { ys[o + 16u] = dot(c2, one); } if (o + 24u < O) { ys[o + 24u] = dot(c3, one); }
}", 32, "texhs"),
        ("texStorage_4rows_x_ubo", "@group(0) @binding(2) var w: texture_storage_2d<rgba32float, read>; @group(0) @binding(3) var<uniform> xu: array<vec4<f32>, K4>;
@compute @workgroup_size(8) fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) l: u32) {
  let o = wid.x * 32u + l;
  let r0 = i32(min(o, O - 1u)); let r1 = i32(min(o + 8u, O - 1u)); let r2 = i32(min(o + 16u, O - 1u)); let r3 = i32(min(o + 24u, O - 1u));
  var c = vec4<f32>(0.0);
  for (var i = 0u; i < K4; i += 1u) {
    let xv = xu[i];
    let kk = i32(i);
    c += vec4<f32>(dot(xv, textureLoad(w, vec2<i32>(kk, r0))), dot(xv, textureLoad(w, vec2<i32>(kk, r1))), dot(xv, textureLoad(w, vec2<i32>(kk, r2))), dot(xv, textureLoad(w, vec2<i32>(kk, r3))));
  }
  if (o < O) { ys[o] = c.x; } if (o + 8u < O) { ys[o + 8u] = c.y; } if (o + 16u < O) { ys[o + 16u] = c.z; } if (o + 24u < O) { ys[o + 24u] = c.w; }
}", 32, "texs"),
        ("texStorageH8_1row_x_ubo", "@group(0) @binding(2) var w: texture_storage_2d<rgba32uint, read>; @group(0) @binding(3) var<uniform> xu: array<vec4<f32>, K4>;
@compute @workgroup_size(8) fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) l: u32) {
  let o = min(wid.x * 8u + l, O - 1u);
  var c = vec4<f32>(0.0);
  for (var i = 0u; i < K4 / 2u; i += 1u) {
    let h = textureLoad(w, vec2<i32>(i32(i), i32(o)));
    c += xu[2u * i] * vec4<f32>(unpack2x16float(h.x), unpack2x16float(h.y)) + xu[2u * i + 1u] * vec4<f32>(unpack2x16float(h.z), unpack2x16float(h.w));
  }
  ys[o] = c.x + c.y + c.z + c.w;
}", 8, "texhs"),
        ("texStorageRGBA16F_4rows_x_ubo", "@group(0) @binding(2) var w: texture_storage_2d<rgba16float, read>; @group(0) @binding(3) var<uniform> xu: array<vec4<f32>, K4>;
@compute @workgroup_size(8) fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) l: u32) {
  let o = wid.x * 32u + l;
  let r0 = i32(min(o, O - 1u)); let r1 = i32(min(o + 8u, O - 1u)); let r2 = i32(min(o + 16u, O - 1u)); let r3 = i32(min(o + 24u, O - 1u));
  var c = vec4<f32>(0.0);
  for (var i = 0u; i < K4; i += 1u) {
    let xv = xu[i];
    let kk = i32(i);
    c += vec4<f32>(dot(xv, textureLoad(w, vec2<i32>(kk, r0))), dot(xv, textureLoad(w, vec2<i32>(kk, r1))), dot(xv, textureLoad(w, vec2<i32>(kk, r2))), dot(xv, textureLoad(w, vec2<i32>(kk, r3))));
  }
  if (o < O) { ys[o] = c.x; } if (o + 8u < O) { ys[o + 8u] = c.y; } if (o + 16u < O) { ys[o + 16u] = c.z; } if (o + 24u < O) { ys[o + 24u] = c.w; }
}", 32, "tex16s"),
        ("texStorage_8rows_x_ubo", "@group(0) @binding(2) var w: texture_storage_2d<rgba32float, read>; @group(0) @binding(3) var<uniform> xu: array<vec4<f32>, K4>;
@compute @workgroup_size(8) fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) l: u32) {
  let o = wid.x * 64u + l;
  let r0 = i32(min(o, O - 1u)); let r1 = i32(min(o + 8u, O - 1u)); let r2 = i32(min(o + 16u, O - 1u)); let r3 = i32(min(o + 24u, O - 1u));
  let r4 = i32(min(o + 32u, O - 1u)); let r5 = i32(min(o + 40u, O - 1u)); let r6 = i32(min(o + 48u, O - 1u)); let r7 = i32(min(o + 56u, O - 1u));
  var c = vec4<f32>(0.0); var e = vec4<f32>(0.0);
  for (var i = 0u; i < K4; i += 1u) {
    let xv = xu[i];
    let kk = i32(i);
    c += vec4<f32>(dot(xv, textureLoad(w, vec2<i32>(kk, r0))), dot(xv, textureLoad(w, vec2<i32>(kk, r1))), dot(xv, textureLoad(w, vec2<i32>(kk, r2))), dot(xv, textureLoad(w, vec2<i32>(kk, r3))));
    e += vec4<f32>(dot(xv, textureLoad(w, vec2<i32>(kk, r4))), dot(xv, textureLoad(w, vec2<i32>(kk, r5))), dot(xv, textureLoad(w, vec2<i32>(kk, r6))), dot(xv, textureLoad(w, vec2<i32>(kk, r7))));
  }
  if (o < O) { ys[o] = c.x; } if (o + 8u < O) { ys[o + 8u] = c.y; } if (o + 16u < O) { ys[o + 16u] = c.z; } if (o + 24u < O) { ys[o + 24u] = c.w; }
  if (o + 32u < O) { ys[o + 32u] = e.x; } if (o + 40u < O) { ys[o + 40u] = e.y; } if (o + 48u < O) { ys[o + 48u] = e.z; } if (o + 56u < O) { ys[o + 56u] = e.w; }
}", 64, "texs"),
        ("texStorageH8man_4rows_x_ubo", "@group(0) @binding(2) var w: texture_storage_2d<rgba32uint, read>; @group(0) @binding(3) var<uniform> xu: array<vec4<f32>, K4>;
fn lo(h: vec4<u32>) -> vec4<f32> {
  return bitcast<vec4<f32>>(((h << vec4<u32>(13u)) & vec4<u32>(0x0fffe000u)) | ((h << vec4<u32>(16u)) & vec4<u32>(0x80000000u))) * 5.192296858534828e33;
}
fn hi(h: vec4<u32>) -> vec4<f32> {
  return bitcast<vec4<f32>>(((h >> vec4<u32>(3u)) & vec4<u32>(0x0fffe000u)) | (h & vec4<u32>(0x80000000u))) * 5.192296858534828e33;
}
// texel halves: h.x = (k0,k1), h.y = (k2,k3), h.z = (k4,k5), h.w = (k6,k7); lo gives k0,k2,k4,k6; hi gives k1,k3,k5,k7
fn d(xe: vec4<f32>, xo: vec4<f32>, h: vec4<u32>) -> f32 {
  return dot(xe, lo(h)) + dot(xo, hi(h));
}
@compute @workgroup_size(8) fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) l: u32) {
  let o = wid.x * 32u + l;
  let r0 = i32(min(o, O - 1u)); let r1 = i32(min(o + 8u, O - 1u)); let r2 = i32(min(o + 16u, O - 1u)); let r3 = i32(min(o + 24u, O - 1u));
  var c = vec4<f32>(0.0);
  for (var i = 0u; i < K4 / 2u; i += 1u) {
    let x0 = xu[2u * i]; let x1 = xu[2u * i + 1u];
    let xe = vec4<f32>(x0.x, x0.z, x1.x, x1.z); let xo = vec4<f32>(x0.y, x0.w, x1.y, x1.w);
    let kk = i32(i);
    c += vec4<f32>(d(xe, xo, textureLoad(w, vec2<i32>(kk, r0))), d(xe, xo, textureLoad(w, vec2<i32>(kk, r1))), d(xe, xo, textureLoad(w, vec2<i32>(kk, r2))), d(xe, xo, textureLoad(w, vec2<i32>(kk, r3))));
  }
  if (o < O) { ys[o] = c.x; } if (o + 8u < O) { ys[o + 8u] = c.y; } if (o + 16u < O) { ys[o + 16u] = c.z; } if (o + 24u < O) { ys[o + 24u] = c.w; }
}", 32, "texhs"),
        ("texStorageTiled_4rows_x_ubo", "@group(0) @binding(2) var w: texture_storage_2d<rgba32float, read>; @group(0) @binding(3) var<uniform> xu: array<vec4<f32>, K4>;
@compute @workgroup_size(64) fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) l: u32) {
  let o = wid.x * 256u + l;
  let y0 = i32(wid.x * K4);
  let s = vec4<i32>(i32(l), i32(l) + 64, i32(l) + 128, i32(l) + 192);
  var c = vec4<f32>(0.0);
  for (var i = 0u; i < K4; i += 1u) {
    let xv = xu[i];
    let yy = y0 + i32(i);
    c += vec4<f32>(dot(xv, textureLoad(w, vec2<i32>(s.x, yy))), dot(xv, textureLoad(w, vec2<i32>(s.y, yy))), dot(xv, textureLoad(w, vec2<i32>(s.z, yy))), dot(xv, textureLoad(w, vec2<i32>(s.w, yy))));
  }
  if (o < O) { ys[o] = c.x; } if (o + 64u < O) { ys[o + 64u] = c.y; } if (o + 128u < O) { ys[o + 128u] = c.z; } if (o + 192u < O) { ys[o + 192u] = c.w; }
}", 256, "textl"),
        ("texStorage_4rows_wg64_x_ubo", "@group(0) @binding(2) var w: texture_storage_2d<rgba32float, read>; @group(0) @binding(3) var<uniform> xu: array<vec4<f32>, K4>;
@compute @workgroup_size(64) fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) l: u32) {
  let o = wid.x * 256u + l;
  let r0 = i32(min(o, O - 1u)); let r1 = i32(min(o + 64u, O - 1u)); let r2 = i32(min(o + 128u, O - 1u)); let r3 = i32(min(o + 192u, O - 1u));
  var c = vec4<f32>(0.0);
  for (var i = 0u; i < K4; i += 1u) {
    let xv = xu[i];
    let kk = i32(i);
    c += vec4<f32>(dot(xv, textureLoad(w, vec2<i32>(kk, r0))), dot(xv, textureLoad(w, vec2<i32>(kk, r1))), dot(xv, textureLoad(w, vec2<i32>(kk, r2))), dot(xv, textureLoad(w, vec2<i32>(kk, r3))));
  }
  if (o < O) { ys[o] = c.x; } if (o + 64u < O) { ys[o + 64u] = c.y; } if (o + 128u < O) { ys[o + 128u] = c.z; } if (o + 192u < O) { ys[o + 192u] = c.w; }
}", 256, "texs"),
        ("texStorage_2rows_x_ubo", "@group(0) @binding(2) var w: texture_storage_2d<rgba32float, read>; @group(0) @binding(3) var<uniform> xu: array<vec4<f32>, K4>;
@compute @workgroup_size(8) fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) l: u32) {
  let o = wid.x * 16u + l;
  let r0 = i32(min(o, O - 1u)); let r1 = i32(min(o + 8u, O - 1u));
  var c = vec2<f32>(0.0);
  for (var i = 0u; i < K4; i += 1u) {
    let xv = xu[i];
    let kk = i32(i);
    c += vec2<f32>(dot(xv, textureLoad(w, vec2<i32>(kk, r0))), dot(xv, textureLoad(w, vec2<i32>(kk, r1))));
  }
  if (o < O) { ys[o] = c.x; } if (o + 8u < O) { ys[o + 8u] = c.y; }
}", 16, "texs"),
        ("texStorage_1row_unroll4_x_ubo", "@group(0) @binding(2) var w: texture_storage_2d<rgba32float, read>; @group(0) @binding(3) var<uniform> xu: array<vec4<f32>, K4>;
@compute @workgroup_size(8) fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) l: u32) {
  let o = min(wid.x * 8u + l, O - 1u);
  let r = i32(o);
  var c = vec4<f32>(0.0);
  for (var i = 0u; i < K4; i += 4u) {
    let kk = i32(i);
    c += xu[i] * textureLoad(w, vec2<i32>(kk, r)) + xu[i + 1u] * textureLoad(w, vec2<i32>(kk + 1, r)) + xu[i + 2u] * textureLoad(w, vec2<i32>(kk + 2, r)) + xu[i + 3u] * textureLoad(w, vec2<i32>(kk + 3, r));
  }
  ys[o] = c.x + c.y + c.z + c.w;
}", 8, "texs"),
        ("texStorageH8_4rows_x_ubo", "@group(0) @binding(2) var w: texture_storage_2d<rgba32uint, read>; @group(0) @binding(3) var<uniform> xu: array<vec4<f32>, K4>;
fn d(x0: vec4<f32>, x1: vec4<f32>, h: vec4<u32>) -> f32 {
  return dot(x0, vec4<f32>(unpack2x16float(h.x), unpack2x16float(h.y))) + dot(x1, vec4<f32>(unpack2x16float(h.z), unpack2x16float(h.w)));
}
@compute @workgroup_size(8) fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) l: u32) {
  let o = wid.x * 32u + l;
  let r0 = i32(min(o, O - 1u)); let r1 = i32(min(o + 8u, O - 1u)); let r2 = i32(min(o + 16u, O - 1u)); let r3 = i32(min(o + 24u, O - 1u));
  var c = vec4<f32>(0.0);
  for (var i = 0u; i < K4 / 2u; i += 1u) {
    let x0 = xu[2u * i]; let x1 = xu[2u * i + 1u];
    let kk = i32(i);
    c += vec4<f32>(d(x0, x1, textureLoad(w, vec2<i32>(kk, r0))), d(x0, x1, textureLoad(w, vec2<i32>(kk, r1))), d(x0, x1, textureLoad(w, vec2<i32>(kk, r2))), d(x0, x1, textureLoad(w, vec2<i32>(kk, r3))));
  }
  if (o < O) { ys[o] = c.x; } if (o + 8u < O) { ys[o + 8u] = c.y; } if (o + 16u < O) { ys[o + 16u] = c.z; } if (o + 24u < O) { ys[o + 24u] = c.w; }
}", 32, "texhs"),
        ("tex_lane_row_x_ubo", "@group(0) @binding(2) var w: texture_2d<f32>; @group(0) @binding(3) var<uniform> xu: array<vec4<f32>, K4>;
@compute @workgroup_size(8) fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) l: u32) {
  let o = min(wid.x * 8u + l, O - 1u);
  var c = vec4<f32>(0.0);
  for (var i = 0u; i < K4; i += 1u) {
    c += xu[i] * textureLoad(w, vec2<i32>(i32(i), i32(o)), 0);
  }
  ys[o] = c.x + c.y + c.z + c.w;
}", 8, "tex"),
        ("tex_4rows_x_ubo", "@group(0) @binding(2) var w: texture_2d<f32>; @group(0) @binding(3) var<uniform> xu: array<vec4<f32>, K4>;
@compute @workgroup_size(8) fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) l: u32) {
  let o = wid.x * 32u + l;
  let r0 = i32(min(o, O - 1u)); let r1 = i32(min(o + 8u, O - 1u)); let r2 = i32(min(o + 16u, O - 1u)); let r3 = i32(min(o + 24u, O - 1u));
  var c = vec4<f32>(0.0);
  for (var i = 0u; i < K4; i += 1u) {
    let xv = xu[i];
    let kk = i32(i);
    c += vec4<f32>(dot(xv, textureLoad(w, vec2<i32>(kk, r0), 0)), dot(xv, textureLoad(w, vec2<i32>(kk, r1), 0)), dot(xv, textureLoad(w, vec2<i32>(kk, r2), 0)), dot(xv, textureLoad(w, vec2<i32>(kk, r3), 0)));
  }
  if (o < O) { ys[o] = c.x; } if (o + 8u < O) { ys[o + 8u] = c.y; } if (o + 16u < O) { ys[o + 16u] = c.z; } if (o + 24u < O) { ys[o + 24u] = c.w; }
}", 32, "tex"),
        ("texR32_x_ubo", "@group(0) @binding(2) var w: texture_2d<f32>; @group(0) @binding(3) var<uniform> xu: array<vec4<f32>, K4>;
@compute @workgroup_size(8) fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) l: u32) {
  let o = i32(min(wid.x * 8u + l, O - 1u));
  var c = vec4<f32>(0.0);
  for (var i = 0u; i < K4; i += 1u) {
    let k = i32(4u * i);
    c += xu[i] * vec4<f32>(textureLoad(w, vec2<i32>(k, o), 0).x, textureLoad(w, vec2<i32>(k + 1, o), 0).x, textureLoad(w, vec2<i32>(k + 2, o), 0).x, textureLoad(w, vec2<i32>(k + 3, o), 0).x);
  }
  ys[o] = c.x + c.y + c.z + c.w;
}", 8, "texr"),
        ("texU32_x_ubo", "@group(0) @binding(2) var w: texture_2d<u32>; @group(0) @binding(3) var<uniform> xu: array<vec4<f32>, K4>;
@compute @workgroup_size(8) fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) l: u32) {
  let o = min(wid.x * 8u + l, O - 1u);
  var c = vec4<f32>(0.0);
  for (var i = 0u; i < K4; i += 1u) {
    c += xu[i] * bitcast<vec4<f32>>(textureLoad(w, vec2<i32>(i32(i), i32(o)), 0));
  }
  ys[o] = c.x + c.y + c.z + c.w;
}", 8, "texu"),
        ("texStorage_x_ubo", "@group(0) @binding(2) var w: texture_storage_2d<rgba32float, read>; @group(0) @binding(3) var<uniform> xu: array<vec4<f32>, K4>;
@compute @workgroup_size(8) fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) l: u32) {
  let o = min(wid.x * 8u + l, O - 1u);
  var c = vec4<f32>(0.0);
  for (var i = 0u; i < K4; i += 1u) {
    c += xu[i] * textureLoad(w, vec2<i32>(i32(i), i32(o)));
  }
  ys[o] = c.x + c.y + c.z + c.w;
}", 8, "texs"),
        ("texH8_x_ubo", "@group(0) @binding(2) var w: texture_2d<u32>; @group(0) @binding(3) var<uniform> xu: array<vec4<f32>, K4>;
@compute @workgroup_size(8) fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) l: u32) {
  let o = min(wid.x * 8u + l, O - 1u);
  var c = vec4<f32>(0.0);
  for (var i = 0u; i < K4 / 2u; i += 1u) {
    let h = textureLoad(w, vec2<i32>(i32(i), i32(o)), 0);
    c += xu[2u * i] * vec4<f32>(unpack2x16float(h.x), unpack2x16float(h.y)) + xu[2u * i + 1u] * vec4<f32>(unpack2x16float(h.z), unpack2x16float(h.w));
  }
  ys[o] = c.x + c.y + c.z + c.w;
}", 8, "texh"),
        ("storage_lane_row_x_ubo", "@group(0) @binding(2) var<storage, read> w: array<vec4<f32>>; @group(0) @binding(3) var<uniform> xu: array<vec4<f32>, K4>;
@compute @workgroup_size(8) fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) l: u32) {
  let o = min(wid.x * 8u + l, O - 1u);
  var c = vec4<f32>(0.0);
  let b = o * K4;
  for (var i = 0u; i < K4; i += 1u) {
    c += xu[i] * w[b + i];
  }
  ys[o] = c.x + c.y + c.z + c.w;
}", 8, "st"),
        ("tex_lane_row_x_uniform", "@group(0) @binding(2) var w: texture_2d<f32>;
@compute @workgroup_size(8) fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) l: u32) {
  let o = min(wid.x * 8u + l, O - 1u);
  var c = vec4<f32>(0.0);
  for (var i = 0u; i < K4; i += 1u) {
    let xv = vec4<f32>(xs[4u*i], xs[4u*i+1u], xs[4u*i+2u], xs[4u*i+3u]);
    c += xv * textureLoad(w, vec2<i32>(i32(i), i32(o)), 0);
  }
  ys[o] = c.x + c.y + c.z + c.w;
}", 8, "tex"),
        ("tex_transposed_x_uniform", "@group(0) @binding(2) var w: texture_2d<f32>;
@compute @workgroup_size(8) fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) l: u32) {
  let o = min(wid.x * 8u + l, O - 1u);
  var c = vec4<f32>(0.0);
  for (var i = 0u; i < K4; i += 1u) {
    let xv = vec4<f32>(xs[4u*i], xs[4u*i+1u], xs[4u*i+2u], xs[4u*i+3u]);
    c += xv * textureLoad(w, vec2<i32>(i32(o), i32(i)), 0);
  }
  ys[o] = c.x + c.y + c.z + c.w;
}", 8, "tex_t"),
        ("storage_uniform_row_wg1", "@group(0) @binding(2) var<storage, read> w: array<vec4<f32>>;
@compute @workgroup_size(1) fn main(@builtin(workgroup_id) wid: vec3<u32>) {
  let o = wid.x;
  var c = vec4<f32>(0.0);
  let b = o * K4;
  for (var i = 0u; i < K4; i += 1u) {
    let xv = vec4<f32>(xs[4u*i], xs[4u*i+1u], xs[4u*i+2u], xs[4u*i+3u]);
    c += xv * w[b + i];
  }
  ys[o] = c.x + c.y + c.z + c.w;
}", 1, "st"),
        ("storage_uniform_4rows_wg1", "@group(0) @binding(2) var<storage, read> w: array<vec4<f32>>;
@compute @workgroup_size(1) fn main(@builtin(workgroup_id) wid: vec3<u32>) {
  let o = wid.x * 4u;
  var c0 = vec4<f32>(0.0); var c1 = vec4<f32>(0.0); var c2 = vec4<f32>(0.0); var c3 = vec4<f32>(0.0);
  let b = o * K4;
  for (var i = 0u; i < K4; i += 1u) {
    let xv = vec4<f32>(xs[4u*i], xs[4u*i+1u], xs[4u*i+2u], xs[4u*i+3u]);
    c0 += xv * w[b + i]; c1 += xv * w[b + K4 + i]; c2 += xv * w[b + 2u*K4 + i]; c3 += xv * w[b + 3u*K4 + i];
  }
  ys[o] = c0.x + c0.y + c0.z + c0.w;
  ys[o+1u] = c1.x + c1.y + c1.z + c1.w;
  ys[o+2u] = c2.x + c2.y + c2.z + c2.w;
  ys[o+3u] = c3.x + c3.y + c3.z + c3.w;
}", 4, "st"),
        ("storage_lane_row", "@group(0) @binding(2) var<storage, read> w: array<vec4<f32>>;
@compute @workgroup_size(8) fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) l: u32) {
  let o = min(wid.x * 8u + l, O - 1u);
  var c = vec4<f32>(0.0);
  let b = o * K4;
  for (var i = 0u; i < K4; i += 1u) {
    let xv = vec4<f32>(xs[4u*i], xs[4u*i+1u], xs[4u*i+2u], xs[4u*i+3u]);
    c += xv * w[b + i];
  }
  ys[o] = c.x + c.y + c.z + c.w;
}", 8, "st"),
        ("f16pack_uniform_4rows_wg1", "@group(0) @binding(2) var<storage, read> w: array<vec4<u32>>;
@compute @workgroup_size(1) fn main(@builtin(workgroup_id) wid: vec3<u32>) {
  let o = wid.x * 4u;
  var c0 = vec4<f32>(0.0); var c1 = vec4<f32>(0.0); var c2 = vec4<f32>(0.0); var c3 = vec4<f32>(0.0);
  let K8 = K / 8u;
  let b = o * K8;
  for (var i = 0u; i < K8; i += 1u) {
    let xa = vec4<f32>(xs[8u*i], xs[8u*i+1u], xs[8u*i+2u], xs[8u*i+3u]);
    let xb = vec4<f32>(xs[8u*i+4u], xs[8u*i+5u], xs[8u*i+6u], xs[8u*i+7u]);
    let w0 = w[b + i]; let w1 = w[b + K8 + i]; let w2 = w[b + 2u*K8 + i]; let w3 = w[b + 3u*K8 + i];
    c0 += xa * vec4<f32>(unpack2x16float(w0.x), unpack2x16float(w0.y)) + xb * vec4<f32>(unpack2x16float(w0.z), unpack2x16float(w0.w));
    c1 += xa * vec4<f32>(unpack2x16float(w1.x), unpack2x16float(w1.y)) + xb * vec4<f32>(unpack2x16float(w1.z), unpack2x16float(w1.w));
    c2 += xa * vec4<f32>(unpack2x16float(w2.x), unpack2x16float(w2.y)) + xb * vec4<f32>(unpack2x16float(w2.z), unpack2x16float(w2.w));
    c3 += xa * vec4<f32>(unpack2x16float(w3.x), unpack2x16float(w3.y)) + xb * vec4<f32>(unpack2x16float(w3.z), unpack2x16float(w3.w));
  }
  ys[o] = c0.x + c0.y + c0.z + c0.w;
  ys[o+1u] = c1.x + c1.y + c1.z + c1.w;
  ys[o+2u] = c2.x + c2.y + c2.z + c2.w;
  ys[o+3u] = c3.x + c3.y + c3.z + c3.w;
}", 4, "sth"),
    ];
    kernels.extend(
        generated
            .iter()
            .map(|(n, src, per_wg, kind)| (n.as_str(), src.as_str(), *per_wg, *kind)),
    );
    // (name, run n dispatches and read y back, bytes of W)
    type Run<'a> = (String, Box<dyn Fn(u32) -> Vec<f32> + 'a>, f64);
    let mut runs: Vec<Run> = Vec::new();
    for (name, body, per_wg, kind) in kernels {
        if !name.contains(&only) {
            continue;
        }
        let src = format!("{header}{body}");
        let sm = device.create_shader_module(wgpu::ShaderModuleDescriptor {
            label: Some(name),
            source: wgpu::ShaderSource::Wgsl(src.into()),
        });
        let pl = device.create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
            label: None,
            layout: None,
            module: &sm,
            entry_point: Some("main"),
            compilation_options: Default::default(),
            cache: None,
        });
        let wres = match kind {
            "tex" => wgpu::BindingResource::TextureView(&tex),
            "tex_t" => wgpu::BindingResource::TextureView(&tex_t),
            "st" => wbuf.as_entire_binding(),
            "texr" => wgpu::BindingResource::TextureView(&tex_r),
            "texu" => wgpu::BindingResource::TextureView(&tex_u),
            "texs" => wgpu::BindingResource::TextureView(&tex_s),
            "texhs" => wgpu::BindingResource::TextureView(&tex_hs),
            "texus" => wgpu::BindingResource::TextureView(&tex_us),
            "tex16s" => wgpu::BindingResource::TextureView(&tex_16s),
            "textl" => wgpu::BindingResource::TextureView(&tex_tl),
            "texh" => wgpu::BindingResource::TextureView(&tex_h),
            _ => whbuf.as_entire_binding(),
        };
        let mut entries = vec![
            wgpu::BindGroupEntry {
                binding: 1,
                resource: ybuf.as_entire_binding(),
            },
            wgpu::BindGroupEntry {
                binding: 2,
                resource: wres,
            },
        ];
        if name.contains("xtex") {
            entries.push(wgpu::BindGroupEntry {
                binding: 3,
                resource: wgpu::BindingResource::TextureView(&tex_x),
            });
        } else if name.contains("ubo") {
            entries.push(wgpu::BindGroupEntry {
                binding: 3,
                resource: xubo.as_entire_binding(),
            });
        } else {
            entries.push(wgpu::BindGroupEntry {
                binding: 0,
                resource: xbuf.as_entire_binding(),
            });
        }
        let nw: usize = std::env::var("NW")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(1);
        // More copies of W (same texture layout and data) for NW > 1.
        let copy_of_w: Option<(u32, u32, &[u8], wgpu::TextureFormat)> = match kind {
            "textl" => Some((
                256,
                ntiles * (K / 4),
                bytemuck::cast_slice(&wtl),
                wgpu::TextureFormat::Rgba32Float,
            )),
            "tex16s" => Some((
                K / 4,
                O,
                bytemuck::cast_slice(&whh),
                wgpu::TextureFormat::Rgba16Float,
            )),
            "texhs" => Some((
                K / 8,
                O,
                bytemuck::cast_slice(&wh),
                wgpu::TextureFormat::Rgba32Uint,
            )),
            "texs" => Some((
                K / 4,
                O,
                bytemuck::cast_slice(&w),
                wgpu::TextureFormat::Rgba32Float,
            )),
            _ => None,
        };
        let extra: Vec<wgpu::TextureView> = match copy_of_w {
            Some((wd, ht, data, format)) => (1..nw)
                .map(|_| mk_tex_f(wd, ht, data, format, wgpu::TextureUsages::STORAGE_BINDING))
                .collect(),
            None => Vec::new(),
        };
        let mut bgs = vec![device.create_bind_group(&wgpu::BindGroupDescriptor {
            label: None,
            layout: &pl.get_bind_group_layout(0),
            entries: &entries,
        })];
        for t in &extra {
            let mut e2: Vec<wgpu::BindGroupEntry> = entries.clone();
            e2[1].resource = wgpu::BindingResource::TextureView(t);
            bgs.push(device.create_bind_group(&wgpu::BindGroupDescriptor {
                label: None,
                layout: &pl.get_bind_group_layout(0),
                entries: &e2,
            }));
        }
        let groups = O.div_ceil(per_wg);
        let (device, queue, ybuf, rb) = (&device, &queue, &ybuf, &rb);
        let run = move |n: u32| {
            let mut enc = device.create_command_encoder(&Default::default());
            {
                let mut pass = enc.begin_compute_pass(&Default::default());
                pass.set_pipeline(&pl);
                for j in 0..n {
                    pass.set_bind_group(0, &bgs[j as usize % bgs.len()], &[]);
                    pass.dispatch_workgroups(groups, 1, 1);
                }
            }
            enc.copy_buffer_to_buffer(ybuf, 0, rb, 0, (O * 4) as u64);
            queue.submit([enc.finish()]);
            rb.slice(..).map_async(wgpu::MapMode::Read, |_| {});
            device.poll(wgpu::PollType::wait_indefinitely()).unwrap();
            let y: Vec<f32> =
                bytemuck::cast_slice(&rb.slice(..).get_mapped_range().unwrap()).to_vec();
            rb.unmap();
            y
        };
        let y = run(1);
        let err = y
            .iter()
            .zip(&want)
            .map(|(a, b)| (a - b).abs())
            .fold(0f32, f32::max);
        // noop_1wg measures the cost of a dispatch, not a product.
        assert!(
            name.starts_with("noop") || name.starts_with("t_") || err < 1e-2,
            "{name}: max error {err}"
        );
        let bytes = if kind == "sth" || kind.starts_with("texh") || kind == "tex16s" {
            O * K * 2
        } else {
            O * K * 4
        } as f64;
        runs.push((name.to_string(), Box::new(run), bytes));
    }
    let mut best = vec![f64::MAX; runs.len()];
    let rounds: usize = std::env::var("ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(4);
    for _round in 0..rounds {
        for (i, (_, run, _)) in runs.iter().enumerate() {
            let n = 20;
            let t = Instant::now();
            run(n);
            best[i] = best[i].min(t.elapsed().as_secs_f64() / n as f64);
        }
    }
    for (i, (name, _, bytes)) in runs.iter().enumerate() {
        let dt = best[i];
        println!(
            "{name:32} {:8.3} ms  {:6.2} GB/s  {:6.2} GFLOP/s",
            dt * 1e3,
            bytes / dt / 1e9,
            2.0 * (O * K) as f64 / dt / 1e9
        );
    }
}

/// A design reading X as texels (binding 3) with `n` outputs per lane of an 8-wide workgroup;
/// W's texture is `format`: rgba32float, rgba16float, or rgba32uint (packed f16 pairs).
fn xtex_design(n: u32, format: &str) -> String {
    let mut b = format!(
        "@group(0) @binding(2) var w: texture_storage_2d<{format}, read>;
@group(0) @binding(3) var xt: texture_storage_2d<rgba32float, read>;
@compute @workgroup_size(8) fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) l: u32) {{
  let o = wid.x * {}u + l;
",
        8 * n
    );
    for j in 0..n {
        b += &format!(
            "  let r{j} = i32(min(o + {}u, O - 1u)); var c{j} = 0.0;\n",
            8 * j
        );
    }
    if format == "rgba32uint" {
        b += "  for (var i = 0u; i < K4 / 2u; i += 1u) {
    let kk = i32(i);
    let x0 = textureLoad(xt, vec2<i32>(2 * kk, 0)); let x1 = textureLoad(xt, vec2<i32>(2 * kk + 1, 0));
";
        for j in 0..n {
            b += &format!(
                "    let h{j} = textureLoad(w, vec2<i32>(kk, r{j})); c{j} += dot(x0, vec4<f32>(unpack2x16float(h{j}.x), unpack2x16float(h{j}.y))) + dot(x1, vec4<f32>(unpack2x16float(h{j}.z), unpack2x16float(h{j}.w)));\n"
            );
        }
    } else {
        b += "  for (var i = 0u; i < K4; i += 1u) {
    let kk = i32(i); let xv = textureLoad(xt, vec2<i32>(kk, 0));
";
        for j in 0..n {
            b += &format!("    c{j} += dot(xv, textureLoad(w, vec2<i32>(kk, r{j})));\n");
        }
    }
    b += "  }\n";
    for j in 0..n {
        b += &format!("  if (o + {0}u < O) {{ ys[o + {0}u] = c{j}; }}\n", 8 * j);
    }
    b + "}"
}
