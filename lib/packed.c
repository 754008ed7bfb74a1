// packed.c — quantized models as they are stored: --export-packed writes the integer codes at
// their bit width and the scales in fp16; load_packed reads such a file back (model_open: any model).
//
// #included by train.c after the model (section 10): it uses the Model, its quantized linears
// (section 5) and quant.h's packer.
#ifndef PACKED_C
#define PACKED_C

// ============================================================================================
// Packed low-bit models
//
// `--export-packed out.qbin` stores what a quantized model really is: for each linear of each
// layer its integer codes at their bit width (quant.h's packer: 1-bit 8 per byte, 2-bit 4 per
// byte, 3-bit as a bit stream, 4-bit 2 per byte, ternary 5 trits per byte) and its scales p0, p1
// (quant.h's table: INT step and zero, NF positive and negative scales, sign alpha and beta,
// OneBit h and g, ternary gamma) in fp16; everything else (embeddings, norms, LM head) in the
// model's dtype. Layout: a ModelHeader with magic "BDLQ", then the table's tensors in order,
// each linear as [codes, p0 fp16, p1 fp16] per layer.
//
// Loading dequantizes W^ = value(code, scales) with quant_dequantize: with the same (fp16)
// scales it is bit for bit what the fake-quantized forward computes. The loaded model is a
// full-precision model holding W^ (quantizing it again would not be the identity: a group
// whose codes do not reach both ends would get a narrower grid).

#define PACKED_MAGIC 0x514c4442u  // "BDLQ"

// Bytes of one layer's slice of linear t in the packed file.
static int64_t packed_linear_bytes(const Model *m, int t) {
    return quant_packed_bytes(m->slice[t], quant_pack_width(m->quant)) + 2 * (m->qn0[t] + m->qn1[t]);
}

static void write_fp16(AtomicFile *a, const float *x, int64_t n) {
    uint16_t buf[4096];
    for (int64_t i = 0; i < n; i += 4096) {
        int64_t k = n - i < 4096 ? n - i : 4096;
        for (int64_t j = 0; j < k; j++) buf[j] = f32_to_fp16(x[i + j]);
        atomic_write(a, buf, (size_t)k * 2);
    }
}

static void write_tensor(AtomicFile *a, const float *x, int64_t n, int dtype) {
    if (dtype == DTYPE_F32) { atomic_write(a, x, (size_t)n * 4); return; }
    uint16_t buf[4096];
    for (int64_t i = 0; i < n; i += 4096) {
        int64_t k = n - i < 4096 ? n - i : 4096;
        for (int64_t j = 0; j < k; j++) buf[j] = f32_to_bf16(x[i + j]);
        atomic_write(a, buf, (size_t)k * 2);
    }
}

// Returns the file size; bits per weight of the linears are reported by the caller.
static int64_t export_packed(Model *m, const char *path, int dtype) {
    if (m->quant.method == QUANT_NONE) die("--export-packed needs a quantized model (give -q/-b/-g, or a trained student)");
    if (m->quant_stale) model_quantize(m);
    ModelHeader h = m->cfg;
    h.magic = PACKED_MAGIC;
    h.dtype = dtype;
    int width = quant_pack_width(m->quant);
    uint8_t *buf = malloc_or_die((size_t)quant_packed_bytes(m->n_codes, width) + 8, "packed codes");
    AtomicFile a;
    atomic_open(&a, path);
    atomic_write(&a, &h, sizeof h);
    int64_t bytes = sizeof h;
    for (int t = 0; t < N_TENSORS; t++) {
        if (!m->params_t[t]) continue;
        if (!tensor_is_linear(t)) {
            int64_t n = m->slice[t] * (tensor_is_per_layer(t) ? m->cfg.n_layers : 1);
            write_tensor(&a, m->params_t[t], n, dtype);
            bytes += n * (dtype == DTYPE_BF16 ? 2 : 4);
            continue;
        }
        int64_t base = layer_tensor(m->fwd_t, m, t, 0) - m->wq;
        for (int l = 0; l < m->cfg.n_layers; l++) {
            int64_t nb = quant_packed_bytes(m->slice[t], width);
            if (pack_codes(buf, m->codes + base + (int64_t)l * m->slice[t], m->slice[t], width))
                die("%s: a code of %s layer %d does not fit %d bits", path, TENSOR_NAMES[t], l, width);
            atomic_write(&a, buf, (size_t)nb);
            write_fp16(&a, m->qp0[t] + l * m->qn0[t], m->qn0[t]);
            write_fp16(&a, m->qp1[t] + l * m->qn1[t], m->qn1[t]);
            bytes += packed_linear_bytes(m, t);
        }
    }
    atomic_commit(&a);
    free(buf);
    return bytes;
}

// Reads a packed model into a full-precision Model whose linears hold the dequantized W^.
static void load_packed(Model *m, const char *path) {
    FILE *f = fopen_or_die(path, "rb");
    int64_t fsize = file_size_or_die(f, path);
    ModelHeader h;
    if (fsize < HEADER_BYTES) die("%s: truncated file (smaller than the header)", path);
    fread_exact(&h, sizeof h, f, path);
    QuantSpec q = header_quant(&h);
    h.magic = MODEL_MAGIC;  // validate the rest as a model header
    const char *why = header_problem(&h);
    if (why) die("%s: %s", path, why);
    if (q.method == QUANT_NONE) die("%s: a packed model without quantization", path);
    // the model, full precision, with this file's quantizer described for the sizes
    ModelHeader fp = h;
    fp.quant_method = QUANT_NONE; fp.quant_bits = 0; fp.quant_group = 0; fp.dtype = DTYPE_F32;
    float *p = malloc_or_die((size_t)tensor_sizes(&fp, (int64_t[N_TENSORS]){0}) * sizeof(float), "parameters");
    model_setup(m, &fp, p);
    m->quant = q;  // for the sizes below only
    int64_t want = HEADER_BYTES, esize = h.dtype == DTYPE_BF16 ? 2 : 4;
    int width = quant_pack_width(q);
    for (int t = 0; t < N_TENSORS; t++) {
        if (!m->params_t[t]) continue;
        if (tensor_is_linear(t)) {
            int out, in;
            linear_shape(m, t, &out, &in);
            quant_param_sizes(&m->qn0[t], &m->qn1[t], q, out, in);
            want += packed_linear_bytes(m, t) * h.n_layers;
        } else {
            want += m->slice[t] * (tensor_is_per_layer(t) ? h.n_layers : 1) * esize;
        }
    }
    if (fsize != want) die("%s: %lld bytes, but its header implies %lld", path, (long long)fsize, (long long)want);
    uint8_t *packed = malloc_or_die((size_t)quant_packed_bytes(m->n_table, width) + 8, "packed");
    uint8_t *codes = malloc_or_die((size_t)m->n_table, "codes");
    uint16_t *h16 = malloc_or_die((size_t)m->n_table * 2 + 16, "scales");
    float *p0 = malloc_or_die((size_t)m->n_table * sizeof(float) + 16, "scales");
    float *p1 = malloc_or_die((size_t)m->n_table * sizeof(float) + 16, "scales");
    for (int t = 0; t < N_TENSORS; t++) {
        if (!m->params_t[t]) continue;
        int64_t n = m->slice[t] * (tensor_is_per_layer(t) ? h.n_layers : 1);
        if (!tensor_is_linear(t)) {
            if (h.dtype == DTYPE_F32) fread_exact(m->params_t[t], (size_t)n * 4, f, path);
            else {
                fread_exact(h16, (size_t)n * 2, f, path);
                for (int64_t i = 0; i < n; i++) m->params_t[t][i] = bf16_to_f32(h16[i]);
            }
            continue;
        }
        int out, in;
        linear_shape(m, t, &out, &in);
        for (int l = 0; l < h.n_layers; l++) {
            fread_exact(packed, (size_t)quant_packed_bytes(m->slice[t], width), f, path);
            if (unpack_codes(codes, packed, m->slice[t], width)) die("%s: %s of layer %d: a code out of range", path, TENSOR_NAMES[t], l);
            fread_exact(h16, (size_t)m->qn0[t] * 2, f, path);
            for (int64_t i = 0; i < m->qn0[t]; i++) p0[i] = fp16_to_f32(h16[i]);
            fread_exact(h16, (size_t)m->qn1[t] * 2, f, path);
            for (int64_t i = 0; i < m->qn1[t]; i++) p1[i] = fp16_to_f32(h16[i]);
            int levels = width == QUANT_PACK_TRITS ? 3 : 1 << width;
            for (int64_t i = 0; i < m->slice[t]; i++)
                if (codes[i] >= levels) die("%s: %s of layer %d: a code out of range", path, TENSOR_NAMES[t], l);
            quant_dequantize(layer_tensor(m->params_t, m, t, l), codes, p0, p1, q, out, in);
        }
    }
    fclose(f);
    for (int64_t i = 0; i < m->n_table; i++)
        if (!isfinite(m->params[i])) die("%s: weight %lld is NaN or Inf", path, (long long)i);
    m->quant = (QuantSpec){QUANT_NONE, 16, 0};
    free(packed); free(codes); free(h16); free(p0); free(p1);
}

// Any model file: .bin (magic BDLM) or packed (BDLQ).
static void model_open(Model *m, const char *path) {
    FILE *f = fopen_or_die(path, "rb");
    uint32_t magic = 0;
    size_t got = fread(&magic, 4, 1, f);
    fclose(f);
    if (got == 1 && magic == PACKED_MAGIC) {
        load_packed(m, path);
        printf("packed model %s: dequantized to full precision\n", path);
    } else {
        model_load_file(m, path);
    }
}

#endif
