# Rewrites 3.3's full-size prose (glued figures, no 'goal of 0.70', DPR's 58,880 questions cited) on top of
# drafts/second_edition_wip.patch; run it after applying the patch, then re-execute 3.3.
import json
p='/work/main/notebooks/part3/3_3_mixed_difficulty.ipynb'
nb=json.load(open(p))
def lines(t):
    out=t.splitlines(keepends=True)
    return out
def cell_with(text):
    cs=[c for c in nb['cells'] if text in ''.join(c['source'])]
    assert len(cs)==1,(text,len(cs)); return cs[0]
def replace(c, old, new):
    s=''.join(c['source']); assert old in s,(old[:60]); c['source']=lines(s.replace(old,new))

c=cell_with("## Full size (GPU)")
s=''.join(c['source']); i=s.index("## Full size (GPU)")
c['source']=lines(s[:i]+'''## Full size (GPU)

The next cell holds the full-size setting: the full 5,183-abstract corpus for mining and evaluation, 256
tokens, batch 32 and 150 steps (about five epochs), for the same four kinds of negative, training all
layers. It runs where CUDA exists (it is skipped in CI; without a GPU it only says what it would do). On the
full corpus at 256 tokens, BM25 reaches {glue:text}`full_bm25:.3f` NDCG@10 and MiniLM off the shelf
{glue:text}`full_minilm:.3f` (the recorded run below). Nothing later depends on it.''')

c=cell_with("### The full-size run, measured once on a CPU")
c['source']=lines('''### The full-size run, measured once on a CPU

No GPU was available when this section was written, so we ran the same function once outside CI, on the
book's 2-core CPU, one kind of negative per command (`python -m embedlessons.experiments.part3 --kinds dense`,
then `--kinds random`), merged into one result (the command line's `--append`). BM25 and mixed negatives
have not been run at full size yet: each adds about {glue:text}`full_minutes` minutes of training on this
CPU. The result is a *recorded experiment*: its commands, settings, per-claim scores and timings are
stored with the package (`embedlessons/results/scifact_hardneg_full_size.json`), `python -m
embedlessons.experiments run scifact_hardneg_full_size` reproduces it, and CI runs the same function at a
tiny size. The next cell reads and shows it, it does not retrain. (On a GPU the cell above trains with
mixed precision, so its numbers will differ slightly.)''')

c=cell_with("recorded = recorded_full_size()")
replace(c,'''glue("full_dense_random_p", round(dense_vs_random["p"], 2))''','''glue("full_dense_random_p", round(dense_vs_random["p"], 2))
glue("full_dense_random_ci", f"[{dense_vs_random['ci_low']:+.3f}, {dense_vs_random['ci_high']:+.3f}]")
glue("full_dense_random_hi_points", round(100 * dense_vs_random["ci_high"]))
glue("full_gain_points", round(100 * recorded["vs_minilm"][full_best]["diff"]))
glue("train_claims", len({q for q, _ in rows}))''')

c=cell_with("At full size the picture changes.")
c['source']=lines('''At full size the picture changes. Five epochs of all-layer training with {glue:text}`full_best_kind`
negatives take MiniLM from {glue:text}`full_minilm:.3f` to {glue:text}`full_best:.3f` NDCG@10 on the
full SciFact corpus ({glue:text}`full_gain:+.3f`, 95% CI {glue:text}`full_ci` over the 300 test claims), past
BM25 ({glue:text}`full_bm25:.3f`). But random negatives get almost as far ({glue:text}`full_random:.3f`):
dense minus random is {glue:text}`full_dense_random:+.3f` (95% CI {glue:text}`full_dense_random_ci`, p =
{glue:text}`full_dense_random_p:.2f`), no difference measurable with 300 claims. On SciFact, most of the
gain comes from training on in-domain claims at all; the interval allows the choice of negative to add up to
about {glue:text}`full_dense_random_hi_points` points here, and no more. In DPR's Table 3 (section 3.1), one
BM25 negative added to in-batch training was worth five points of top-20 accuracy on Natural Questions; that
baseline had no extra negative at all, ours has a random one, and DPR trained on 58,880 questions (its
Table 1) {cite}`karpukhin2020dpr`, ours on {glue:text}`train_claims` claims. The price is compute: one kind
of negative trained for {glue:text}`full_minutes` minutes on the CPU, which is why CI runs the small
version above.''')

c=cell_with("assert recorded[\"ndcg\"][\"dense\"] >= 0.70")
replace(c,'''assert recorded["ndcg"]["dense"] >= 0.70 > max(recorded["ndcg"]["MiniLM"], recorded["ndcg"]["BM25"])
assert recorded["vs_minilm"]["dense"]["ci_low"] > 0.03                     # a large, clear gain at full size
assert recorded["ndcg"]["random"] >= 0.70                                   # ... random negatives nearly as large
assert 0 < dense_vs_random["diff"] < 0.02 and dense_vs_random["p"] > 0.05''','''# full size: both fine-tunes pass BM25 and the starting model, with paired intervals above zero...
assert min(recorded["ndcg"][k] for k in ("dense", "random")) > max(recorded["ndcg"][b] for b in ("MiniLM", "BM25"))
assert all(recorded["vs_minilm"][k]["ci_low"] > 0 for k in ("dense", "random"))
# ... while dense vs random is no difference measurable with 300 claims (interval contains zero)
assert dense_vs_random["ci_low"] < 0 < dense_vs_random["ci_high"] and dense_vs_random["p"] > 0.05''')

c=cell_with("## The claims, checked")
replace(c,"The full-size checks read\nthe recorded run.","The full-size checks read\nthe recorded run and use the same rule.")

c=cell_with("## Takeaways")
replace(c,'''above BM25 ({glue:text}`full_bm25:.3f`) and
  the goal set for this part, and random negatives''','''above BM25 ({glue:text}`full_bm25:.3f`), and random negatives''')
open(p,'w').write(json.dumps(nb,indent=1,ensure_ascii=False)+"\n")
print("ok")
