// histogram.c — --histogram L: the latent and quantized weights of layer L as CSV and SVG.
//
// #included by train.c after the model (section 10): it uses the Model and its quantized linears.
#ifndef HISTOGRAM_C
#define HISTOGRAM_C

// ============================================================================================
// Weight histograms
//
// `--histogram L` shows what quantization does to the weights of layer L: for each of its seven
// linears, the histogram of the latent FP weights and of W^ over the same 64 bins (CSV), the
// entropy of the binned FP weights and of the integer codes (bits; the codes can carry at most
// `bits` of them, and a flat use of all levels reaches it), and the same as an SVG picture,
// written directly so that no plotting tool is needed.

#define HIST_BINS 64

static double entropy_bits(const int64_t *counts, int n, int64_t total) {
    double h = 0;
    for (int i = 0; i < n; i++)
        if (counts[i]) { double p = (double)counts[i] / total; h -= p * log2(p); }
    return h;
}

static void write_histogram(Model *m, int layer, const char *prefix, char *json, size_t json_cap) {
    if (strlen(prefix) > 4000) die("--histogram-out: prefix too long");
    if (m->quant.method == QUANT_NONE) die("--histogram needs a quantized model (give -q/-b/-g, or a trained student)");
    if (layer < 0 || layer >= m->cfg.n_layers) die("--histogram: layer %d out of range [0, %d)", layer, m->cfg.n_layers);
    if (m->quant_stale) model_quantize(m);
    char csv_path[4096], svg_path[4096];
    snprintf(csv_path, sizeof csv_path, "%s.csv", prefix);
    snprintf(svg_path, sizeof svg_path, "%s.svg", prefix);
    AtomicFile csv, svg;
    atomic_open(&csv, csv_path);
    char line[512];
    int n = snprintf(line, sizeof line, "tensor,bin_lo,bin_hi,fp_count,quant_count\n");
    atomic_write(&csv, line, (size_t)n);
    char svgbuf[1 << 16];
    int panel_h = 120, width = 640, sn = 0, panel = 0;
    sn += snprintf(svgbuf + sn, sizeof svgbuf - sn,
                   "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"%d\" height=\"%d\" font-family=\"monospace\" font-size=\"11\">\n"
                   "<rect width=\"100%%\" height=\"100%%\" fill=\"white\"/>\n", width, 7 * panel_h + 20);
    char qcsv[4200], qsvg[4200];
    int jn = snprintf(json, json_cap, "\"histogram\": {\"layer\": %d, \"csv\": %s, \"svg\": %s", layer,
                      json_quote(qcsv, sizeof qcsv, csv_path), json_quote(qsvg, sizeof qsvg, svg_path));
    printf("histogram of layer %d (%s %d-bit): entropy of the FP weights (64 bins) and of the codes, in bits\n",
           layer, quant_method_name(m->quant.method), m->quant.bits);
    for (int t = 0; t < N_TENSORS; t++) {
        if (!tensor_is_linear(t)) continue;
        const float *w = layer_tensor(m->params_t, m, t, layer), *wq = layer_tensor(m->fwd_t, m, t, layer);
        const uint8_t *codes = m->codes + (layer_tensor(m->fwd_t, m, t, 0) - m->wq) + (int64_t)layer * m->slice[t];
        int64_t n_w = m->slice[t], fp[HIST_BINS] = {0}, qh[HIST_BINS] = {0}, code_counts[256] = {0};
        float lo = w[0], hi = w[0];
        for (int64_t i = 0; i < n_w; i++) {
            lo = fminf(lo, fminf(w[i], wq[i]));
            hi = fmaxf(hi, fmaxf(w[i], wq[i]));
        }
        float span = hi > lo ? hi - lo : 1.0f;
        for (int64_t i = 0; i < n_w; i++) {
            int a = (int)((w[i] - lo) / span * HIST_BINS), b = (int)((wq[i] - lo) / span * HIST_BINS);
            fp[a < HIST_BINS ? a : HIST_BINS - 1]++;
            qh[b < HIST_BINS ? b : HIST_BINS - 1]++;
            code_counts[codes[i]]++;
        }
        double h_fp = entropy_bits(fp, HIST_BINS, n_w), h_codes = entropy_bits(code_counts, 256, n_w);
        printf("  %-6s  FP %.3f bits | codes %.3f of %d bits\n", TENSOR_NAMES[t], h_fp, h_codes, m->quant.bits);
        jn += snprintf(json + jn, json_cap - jn, ", \"%s\": {\"fp_entropy\": %.4f, \"code_entropy\": %.4f}", TENSOR_NAMES[t], h_fp, h_codes);
        int64_t peak = 1;
        for (int i = 0; i < HIST_BINS; i++) peak = fp[i] > peak ? fp[i] : peak;
        for (int i = 0; i < HIST_BINS; i++) peak = qh[i] > peak ? qh[i] : peak;
        int y0 = panel * panel_h + 20, plot_h = panel_h - 30;
        double bw = (width - 80.0) / HIST_BINS;
        sn += snprintf(svgbuf + sn, sizeof svgbuf - sn, "<text x=\"4\" y=\"%d\">%s  FP %.2f bits, codes %.2f bits  [%.3g, %.3g]</text>\n",
                       y0 - 4, TENSOR_NAMES[t], h_fp, h_codes, lo, hi);
        for (int i = 0; i < HIST_BINS; i++) {
            double x = 60 + i * bw, hf = (double)fp[i] / peak * plot_h, hq = (double)qh[i] / peak * plot_h;
            sn += snprintf(svgbuf + sn, sizeof svgbuf - sn,
                           "<rect x=\"%.1f\" y=\"%.1f\" width=\"%.1f\" height=\"%.1f\" fill=\"#bbb\"/>"
                           "<rect x=\"%.1f\" y=\"%.1f\" width=\"%.1f\" height=\"%.1f\" fill=\"none\" stroke=\"#c00\"/>\n",
                           x, y0 + plot_h - hf, bw, hf, x + bw * 0.25, y0 + plot_h - hq, bw * 0.5, hq);
            n = snprintf(line, sizeof line, "%s,%.6g,%.6g,%lld,%lld\n", TENSOR_NAMES[t], lo + span * i / HIST_BINS,
                         lo + span * (i + 1) / HIST_BINS, (long long)fp[i], (long long)qh[i]);
            atomic_write(&csv, line, (size_t)n);
        }
        panel++;
    }
    sn += snprintf(svgbuf + sn, sizeof svgbuf - sn, "<text x=\"4\" y=\"%d\">grey: FP latent weights; red: quantized W^</text>\n</svg>\n", 7 * panel_h + 14);
    snprintf(json + jn, json_cap - jn, "}");
    atomic_commit(&csv);
    atomic_open(&svg, svg_path);
    atomic_write(&svg, svgbuf, (size_t)sn);
    atomic_commit(&svg);
    printf("wrote %s and %s\n", csv_path, svg_path);
}

#endif
