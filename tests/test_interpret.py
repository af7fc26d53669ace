"""raycad.interpret: variant windows on real FASTA/VCF files, mutagenesis and gradients against direct
forward passes, reverse-complement-invariant embeddings, and one Ray run of the three verbs."""

from __future__ import annotations

import random

import numpy as np
import pyarrow.parquet as pq
import pysam
import pytest
import torch

from raycad.interpret.attribution import BASE_IDS, gradient_x_input, saturation_mutagenesis, strand_logits
from raycad.interpret.embedding import embed_ids
from raycad.interpret.variants import Region, plan_regions, variant_windows
from raycad.model import CaduceusConfig, CaduceusForSequenceClassification, CaduceusTokenizer

WIDTH = 11


def tiny_model(rcps: bool, **overrides) -> CaduceusForSequenceClassification:
    torch.manual_seed(1)
    config = CaduceusConfig.from_preset("caduceus-ps-1k-d118-l4" if rcps else "caduceus-ph-1k-d118-l4",
                                        **({"d_model": 16, "n_layer": 2, "num_labels": 3} | overrides))
    return CaduceusForSequenceClassification(config).eval()


def tokens(sequences: list[str], length: int) -> torch.Tensor:
    return torch.from_numpy(CaduceusTokenizer().encode_batch(sequences, length).input_ids.astype(np.int64))


def revcomp(seq: str) -> str:
    return seq[::-1].translate(str.maketrans("ACGT", "TGCA"))


# ---- real FASTA and VCF files ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def genome(tmp_path_factory):
    """Two contigs (chr1 300 bp, chr2 120 bp) in an indexed FASTA; a bgzipped, tabix-indexed VCF."""
    root = tmp_path_factory.mktemp("genome")
    rng = random.Random(7)
    contigs = {"chr1": "".join(rng.choice("ACGT") for _ in range(300)),
               "chr2": "".join(rng.choice("ACGT") for _ in range(120))}
    fasta = root / "ref.fa"
    fasta.write_text("".join(f">{name}\n" + "\n".join(seq[i:i + 60] for i in range(0, len(seq), 60)) + "\n"
                             for name, seq in contigs.items()))
    pysam.faidx(str(fasta))
    c1, c2 = contigs["chr1"], contigs["chr2"]
    wrong = "A" if c1[199] != "A" else "C"
    other = {b: next(x for x in "ACGT" if x != b) for b in "ACGT"}
    records = [  # (chrom, 1-based pos, id, REF, ALT)
        ("chr1", 50, "snv", c1[49], other[c1[49]]),
        ("chr1", 100, "ins", c1[99], c1[99] + "TT"),
        ("chr1", 150, "del", c1[149:152], c1[149]),
        ("chr1", 200, "mismatch", wrong, c1[199]),
        ("chr1", 298, "edge", c1[297], other[c1[297]]),
        ("chr2", 3, "multi", c2[2], f"{other[c2[2]]},<DEL>"),
        ("chr2", 119, "past_end", c2[118:120] + "A", c2[118]),
        ("chrX", 5, "off", "A", "C"),
    ]
    lines = ["##fileformat=VCFv4.2", "##contig=<ID=chr1,length=300>", "##contig=<ID=chr2,length=120>",
             "##contig=<ID=chrX,length=1000>", "##ALT=<ID=DEL,Description=\"Deletion\">",
             "#CHROM\tPOS\tID\tREF\tALT\tQUAL\tFILTER\tINFO"]
    lines += [f"{c}\t{p}\t{i}\t{r}\t{a}\t.\t.\t." for c, p, i, r, a in records]
    (root / "v.vcf").write_text("\n".join(lines) + "\n")
    vcf = pysam.tabix_index(str(root / "v.vcf"), preset="vcf", force=True)
    return {"fasta": str(fasta), "vcf": vcf, "contigs": contigs, "root": root}


def test_windows_and_alleles_exact(genome):
    c1, c2 = genome["contigs"]["chr1"], genome["contigs"]["chr2"]
    rows = {(r["id"], r["alt"]): r for r in variant_windows(genome["vcf"], genome["fasta"], WIDTH)}
    assert len(rows) == 9  # every allele of every record, bad ones included

    snv = rows["snv", next(a for (i, a) in rows if i == "snv")]
    assert snv["ref_sequence"] == c1[44:55] and snv["window_start"] == 44
    assert snv["alt_sequence"] == c1[44:49] + snv["alt"] + c1[50:55]
    assert snv["ref_sequence"][5] == snv["ref"] and snv["alt_sequence"][5] == snv["alt"]  # centre of 11

    ins = rows["ins", c1[99] + "TT"]   # REF 1 base, ALT 3: alt window re-centred on the 3 inserted bases
    assert ins["ref_sequence"] == c1[94:105]
    assert ins["alt_sequence"] == c1[95:99] + c1[99] + "TT" + c1[100:104]

    dele = rows["del", c1[149]]        # REF 3 bases centred in the ref window, the 1-base ALT in the alt window
    assert dele["ref_sequence"] == c1[145:156] and dele["window_start"] == 145
    assert dele["alt_sequence"] == c1[144:149] + c1[149] + c1[152:157]

    edge = rows["edge", next(a for (i, a) in rows if i == "edge")]
    assert edge["ref_sequence"] == c1[292:300] + "NNN" and edge["edge_padded"]
    assert all(len(r["ref_sequence"]) == len(r["alt_sequence"]) == WIDTH for r in rows.values() if not r["status"])

    multi = {a: r for (i, a), r in rows.items() if i == "multi"}
    assert multi["<DEL>"]["status"] == "symbolic_alt"
    good = next(r for a, r in multi.items() if a != "<DEL>")
    assert good["status"] == "" and good["ref_sequence"] == "NNN" + c2[0:8] and good["edge_padded"] and not snv["edge_padded"]

    status = {i: r["status"] for (i, _), r in rows.items() if i in ("mismatch", "past_end", "off")}
    assert status == {"mismatch": "ref_mismatch", "past_end": "beyond_contig_end", "off": "off_contig"}


def test_regions_split_indexed_vcf_without_losing_records(genome):
    with pysam.FastaFile(genome["fasta"]) as fasta:
        lengths = dict(zip(fasta.references, fasta.lengths))
    regions = plan_regions(genome["vcf"], lengths, region_size=100)
    assert Region("chrX") in regions and Region("chr1", 0, 100) in regions and Region("chr1", 200, None) in regions
    whole = [(r["id"], r["alt"]) for r in variant_windows(genome["vcf"], genome["fasta"], WIDTH)]
    split = [(r["id"], r["alt"]) for reg in regions for r in variant_windows(genome["vcf"], genome["fasta"], WIDTH, reg)]
    assert split == whole


def test_malformed_vcf_record_is_a_clear_error(genome, tmp_path):
    from raycad.data.records import RecordError

    bad = tmp_path / "bad.vcf"
    bad.write_text("##fileformat=VCFv4.2\n##contig=<ID=chr1,length=300>\n#CHROM\tPOS\tID\tREF\tALT\tQUAL\tFILTER\tINFO\n"
                   "chr1\t5\tok\tA\tC\t.\t.\t.\nchr1\tfive\tbad\tA\tC\t.\t.\t.\n")
    with pytest.raises(RecordError, match=r"bad.vcf: the record after chr1:5 cannot be read"):
        list(variant_windows(str(bad), genome["fasta"], WIDTH))


# ---- attribution on the model ------------------------------------------------------------------------------------


@pytest.mark.parametrize("rcps", [True, False])
def test_ism_delta_equals_two_forward_passes(rcps):
    model = tiny_model(rcps)
    ids = tokens(["ACGTTGCANGTACCA"], 20)[0]                  # 15 bases, 5 [PAD] on the left
    delta, reference = saturation_mutagenesis(model, ids, batch_size=16)
    assert delta.shape == (15, 4, 3)
    for position, base in [(0, 2), (6, 3), (8, 0), (14, 1)]:  # position 8 is N: all four bases are mutations
        mutant = ids.clone()
        mutant[5 + position] = BASE_IDS[base]
        with torch.no_grad():
            expected = strand_logits(model, mutant[None])[0] - strand_logits(model, ids[None])[0]
        assert torch.allclose(delta[position, base], expected, atol=1e-5)
        assert expected.abs().max() > 1e-4
    ref_columns = [BASE_IDS.index(int(t)) for t in ids[5:] if int(t) in BASE_IDS]
    assert all(delta[p, c].abs().max() == 0 for p, c in enumerate(ref_columns[:8]))
    with torch.no_grad():  # both strands: the score of the reverse complement is the same
        rc = model.caduceus.reverse_complement(ids[None])
        assert torch.allclose(strand_logits(model, rc)[0], reference, atol=1e-5)
        if not rcps:
            assert torch.allclose(reference, (model(ids[None]).logits + model(rc).logits)[0] / 2, atol=1e-6)


@pytest.mark.parametrize("rcps", [True, False])
def test_gradient_matches_autograd_through_an_explicit_one_hot(rcps):
    model = tiny_model(rcps)
    ids = tokens(["ACGTTGCAAGTACCA", "TTGACCAGTAGGCATGCA"], 18)
    gradient, gxi = gradient_x_input(model, ids, target=1)

    embeddings = model.caduceus.backbone.embeddings
    table = embeddings(torch.arange(model.config.vocab_size)).detach()
    onehot = torch.nn.functional.one_hot(ids, model.config.vocab_size).float().requires_grad_()
    strands = [onehot] if rcps else [onehot, onehot.flip(1)[..., model.caduceus.complement]]
    logits = []
    for x in strands:  # the embedding output replaced by X @ T, differentiable in X
        handle = embeddings.register_forward_hook(lambda m, a, out, x=x: (x @ table).transpose(0, 1))
        try:
            ids_in = ids if x is onehot else model.caduceus.reverse_complement(ids)
            logits.append(model(ids_in).logits if rcps else _no_conjoin(model, ids_in))
        finally:
            handle.remove()
    (torch.stack(logits).mean(0)[:, 1].sum()).backward()
    expected = onehot.grad[..., list(BASE_IDS)] * (ids != 4)[..., None]
    assert torch.allclose(gradient, expected, atol=1e-6) and expected.abs().max() > 1e-5
    assert torch.equal(gxi != 0, (gradient != 0) & (ids[..., None] == torch.tensor(BASE_IDS)))


def _no_conjoin(model, ids):
    return model(ids).logits  # the tiny Ph model does not conjoin in eval mode (conjoin_eval False)


@pytest.mark.parametrize("rcps", [True, False])
def test_embeddings_equal_for_a_sequence_and_its_reverse_complement(rcps):
    model = tiny_model(rcps)
    seq = "ACGTTGCAAGTACCAGGATTACAGT"
    ids = tokens([seq, revcomp(seq)], len(seq))
    out = embed_ids(model, ids, layers=[0, 1, 2])
    for name, value in out.items():
        assert value.shape == (2, 16)
        assert torch.allclose(value[0], value[1], atol=1e-5), name
    assert torch.allclose(out["embedding"], out["layer_2"])
    assert out["layer_1"].abs().max() > 0
    if not rcps:  # without the RC pass a Ph model is not invariant: the averaging is what makes it so
        single = embed_ids(model, ids, rc_average=False)["embedding"]
        assert (single[0] - single[1]).abs().max() > 1e-4
    ids_padded = tokens([seq], len(seq) + 6)  # mean over real tokens: padding is masked out of the pool
    assert not torch.allclose(embed_ids(model, ids_padded, pooling="mean")["embedding"][0],
                              embed_ids(model, ids_padded, pooling="max")["embedding"][0])


# ---- the three verbs on Ray ---------------------------------------------------------------------------------------


@pytest.mark.slow
def test_embed_explain_score_variants_on_ray(ray_local, genome, tmp_path):
    from raycad.cli import main
    from raycad.interpret import embed, explain
    from raycad.train.checkpoint import export_model

    model = tiny_model(True, num_labels=2)
    model_dir = export_model(model, tmp_path / "model",
                             meta={"class_names": ["neg", "pos"], "max_length": WIDTH, "truncation": "right"})
    seqs = {"r1": "ACGTTGCAAGT", "r2": "TTGACCAGTAGGCA", "r3": "GGGATTACA"}
    fasta = tmp_path / "in.fa"
    fasta.write_text("".join(f">{k}\n{v}\n" for k, v in seqs.items()))

    result = embed(model_dir, str(fasta), tmp_path / "emb.parquet", layers=[0], actors=1)
    table = pq.read_table(tmp_path / "emb.parquet")
    assert table.column("id").to_pylist() == list(seqs) and result["records"] == 3
    direct = embed_ids(model, tokens(list(seqs.values()), WIDTH), layers=[0])
    assert np.allclose(np.stack(table.column("embedding").to_numpy(zero_copy_only=False)), direct["embedding"], atol=1e-5)

    report = explain(model_dir, str(fasta), tmp_path / "explain", target="pos", max_records=2, batch_size=16,
                     actors=1)
    assert report.capped and report.records == 2
    first = np.load(tmp_path / "explain" / "0000_r1.npz")
    delta, _ = saturation_mutagenesis(model, tokens([seqs["r1"]], WIDTH)[0])
    assert str(first["sequence"]) == seqs["r1"] and np.allclose(first["ism"], delta[:, :, 1], atol=1e-5)
    assert (tmp_path / "explain" / "0001_r2.png").stat().st_size > 1000   # r2 truncated to 11 bases
    assert pq.read_table(tmp_path / "explain" / "summary.parquet").column("length").to_pylist() == [11, 11]

    out = tmp_path / "variants.parquet"
    assert main(["score-variants", str(model_dir), "--vcf", genome["vcf"], "--reference", genome["fasta"],
                 "-o", str(out), "--batch-size", "4", "--actors", "1"]) == 0
    scored = pq.read_table(out).to_pandas()
    assert list(scored["id"]) == ["snv", "ins", "del", "edge", "multi"]
    skipped = (tmp_path / "variants.parquet.skipped.tsv").read_text().splitlines()
    assert sorted(line.split("\t")[-1] for line in skipped[1:]) == [
        "beyond_contig_end", "off_contig", "ref_mismatch", "symbolic_alt"]
    row = scored.iloc[0]
    windows = next(r for r in variant_windows(genome["vcf"], genome["fasta"], WIDTH) if r["id"] == "snv")
    with torch.no_grad():
        p = strand_logits(model, tokens([windows["ref_sequence"], windows["alt_sequence"]], WIDTH)).softmax(-1).numpy()
    assert np.isclose(row["prob_ref_pos"], p[0, 1], atol=1e-5) and np.isclose(row["prob_alt_pos"], p[1, 1], atol=1e-5)
    assert np.isclose(row["delta_pos"], p[1, 1] - p[0, 1], atol=1e-5)
    log_odds = np.log(p[1, 1] / p[1, 0]) - np.log(p[0, 1] / p[0, 0])
    assert np.isclose(row["log_odds_pos"], log_odds, atol=1e-4) and np.isclose(row["log_odds_neg"], -log_odds, atol=1e-4)
