"""The nlp_query agent: insight generator, seq2seq pieces, retrieval, training, privacy."""

import warnings

import numpy as np
import pytest
import torch

from meshfl import agents
from meshfl.agents.nlp_query import Answer, normalize_answer, rouge_l
from meshfl.config.errors import ConfigError, DataSchemaError, MeshflError
from meshfl.data.insights import INSIGHT_TOPICS, INSIGHTS_SCHEMA, mesh_questions
from meshfl.models.flat import get_flat
from meshfl.models.seq2seq import LoRALinear, encode_pairs
from meshfl.privacy.budget import DPStep
from meshfl.privacy.dpsgd import per_sample_gradients

TINY = {"encoder": "tiny", "local_epochs": 1}


@pytest.fixture(scope="module")
def agent():
    return agents.get("nlp_query")(TINY)


@pytest.fixture(scope="module")
def local(agent):
    return agent.prepare(agent.synthetic_data(160, seed=0))


# -- data ---------------------------------------------------------------------------------


def test_questions_are_answered_by_one_of_their_insights():
    frame = mesh_questions(300, seed=5)
    INSIGHTS_SCHEMA.validate(frame)
    assert set(frame["topic"]) == set(INSIGHT_TOPICS)
    assert frame["question"].nunique() > 200  # entities and paraphrases vary
    for question, insights, answer in zip(
        frame["question"], frame["insights"], frame["answer"], strict=True
    ):
        lines = insights.split("\n")
        assert len(lines) == 5 and len(set(lines)) == 5
        assert any(answer in line for line in lines), (question, answer)
    assert mesh_questions(20, seed=1).equals(mesh_questions(20, seed=1))


def test_generator_rejects_bad_arguments():
    with pytest.raises(ConfigError, match="'insights_per_row' parameter of mesh_questions"):
        mesh_questions(3, insights_per_row=0)


# -- metrics ------------------------------------------------------------------------------


def test_answer_metrics():
    assert normalize_answer(" $1.2M ") == "1 2m"
    assert rouge_l("foo corp", "foo corp") == 1.0
    assert rouge_l("corp", "foo corp") == pytest.approx(2 / 3)
    assert rouge_l("", "foo") == 0.0
    assert rouge_l("bar", "foo") == 0.0


# -- model pieces -------------------------------------------------------------------------


def test_lora_starts_as_the_frozen_projection_and_trains_alone():
    base = torch.nn.Linear(6, 5, bias=False)
    lora = LoRALinear(base, rank=2, alpha=4.0)
    x = torch.randn(3, 6)
    torch.testing.assert_close(lora(x), base(x))
    base.weight.requires_grad_(False)
    lora(x).sum().backward()
    assert base.weight.grad is None
    assert lora.lora_b.weight.grad is not None and lora.lora_b.weight.grad.abs().sum() > 0


def test_frozen_base_is_public_and_vector_is_seeded(agent):
    _, a = agent.seq2seq(seed=0)
    _, b = agent.seq2seq(seed=1)
    frozen_a = [p for p in a.parameters() if not p.requires_grad]
    frozen_b = [p for p in b.parameters() if not p.requires_grad]
    assert all(torch.equal(x, y) for x, y in zip(frozen_a, frozen_b, strict=True))
    other = type(agent)({**TINY, "base_seed": 1})
    _, c = other.seq2seq(seed=0)
    shared_c = c.t5.shared.weight  # type: ignore[union-attr]
    assert not torch.equal(shared_c, a.t5.shared.weight)  # type: ignore[union-attr]

    v0 = agent.init_vector(seed=0)
    np.testing.assert_array_equal(v0, agent.init_vector(seed=0))
    assert not np.array_equal(v0, agent.init_vector(seed=1))  # adapters' A matrices
    # default tiny config: last blocks in full + rank-8 adapters on the others' q/v
    assert v0.size == get_flat(a).size == 88_064


def test_only_linear_weights_train_so_fast_dp_gradients_are_exact(agent, local):
    _, model = agent.seq2seq(seed=0)
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable and all(n.endswith(".weight") for n in trainable)
    assert not any("shared" in n or "layer_norm" in n or "relative" in n for n in trainable)
    from meshfl.models.seq2seq import sequence_loss

    x = torch.as_tensor(local.train_features[:3])
    y = torch.as_tensor(local.labels[:3])
    grads = per_sample_gradients(model, x, y, loss_fn=sequence_loss, method="taps")
    name = next(iter(grads))
    for i in range(3):
        model.zero_grad()
        sequence_loss(model(x[i : i + 1]), y[i : i + 1]).backward()
        param = dict(model.named_parameters())[name]
        torch.testing.assert_close(grads[name][i], param.grad, rtol=1e-4, atol=1e-6)


def test_candidates_make_answers_extractive(agent):
    seq = agent._frozen()
    features, labels = encode_pairs(
        seq, ["question: who? context: ticket for bob"], ["bob"], source_length=16, target_length=4
    )
    s, t = 16, 4
    source = features[0, :s]
    candidates = features[0, s + t :]
    kept = set(candidates[candidates >= 0].astype(int))
    assert kept == set(source[source != seq.pad_id].astype(int)) | {seq.eos_id}
    [bob] = seq.tokenizer("bob", add_special_tokens=False)["input_ids"]
    assert candidates[labels[0, 0]] == bob and candidates[labels[0, 1]] == seq.eos_id
    assert features[0, s] == seq.start_id and features[0, s + 1] == bob


# -- the agent ----------------------------------------------------------------------------


def test_local_training_learns_to_answer(agent, local):
    keen = type(agent)({**TINY, "local_epochs": 8})
    vector = keen.init_vector(seed=0)
    before = keen.evaluate(vector, local)
    update = keen.local_update(vector, local, server_round=1, seed=0)
    after = keen.evaluate(update.vector, local)
    assert before["rouge_l"] < 0.05
    assert after["rouge_l"] > before["rouge_l"] + 0.2
    assert 0.7 < after["retrieval_recall"] <= 1.0


def test_ask_returns_the_answer_and_the_insights_it_used(agent, local):
    model = agent.model(agent.init_vector(seed=0))
    store = [
        "Churn risk for client Globex of Acme MSP: high",
        "Revenue forecast for Q3 at Acme MSP: $1.2M",
        "Ticket 4242 for Tyrell assigned to Bob, ETA 4 hours",
    ]
    answer = model.ask("What is the churn risk for Globex?", "\n".join(store))
    assert isinstance(answer, Answer) and isinstance(answer.text, str)
    assert len(answer.insights) == agent.config.top_k and set(answer.insights) <= set(store)
    assert answer.scores == sorted(answer.scores, reverse=True)
    source = " ".join([*answer.insights, "what is the churn risk for globex?"]).lower()
    assert all(word in source for word in answer.text.split())  # extractive
    frame = agent.synthetic_data(4, seed=2)
    assert len(model.predict(frame)) == 4
    with pytest.raises(DataSchemaError, match="lacks 'insights'"):
        model.predict(frame[["question"]])
    with pytest.raises(ConfigError, match="at least one insight"):
        model.ask("anything?", [" "])


def test_dp_sgd_round_runs_the_planned_steps(agent, local):
    mechanism, rate, steps = agent.privacy_shape(local)
    dp = DPStep(mechanism, 1.0, rate, steps, 1.0, "sample")
    vector = agent.init_vector(seed=0)
    with warnings.catch_warnings():  # noise from OS entropy: no weak-RNG warning any more
        warnings.filterwarnings("error", message=".*cryptographically secure.*")
        update = agent.local_update(vector, local, server_round=1, seed=3, dp=dp)
    assert update.privacy_event == dp.event()
    assert "train_loss" not in update.metrics  # computed on raw data: not sent under DP
    assert not np.array_equal(update.vector, vector)


def test_bad_config_and_data_are_explained():
    cls = agents.get("nlp_query")
    with pytest.raises(ConfigError, match="multiple of 'num_heads'"):
        cls({"d_model": 30, "num_heads": 4})
    with pytest.raises(ConfigError, match="leave nothing to train"):
        cls({**TINY, "lora_rank": 0, "train_last_layers": 0}).init_vector(seed=0)
    frame = mesh_questions(3, seed=0)
    frame.loc[1, "insights"] = "\n \n"
    with pytest.raises(DataSchemaError, match="row 1 holds none"):
        cls(TINY).prepare(frame)


def test_a_pretrained_generator_loads_from_a_local_directory_with_lora_only(agent, tmp_path):
    base = agent._frozen()
    base.model.save_pretrained(tmp_path)
    base.tokenizer.save_pretrained(tmp_path)
    named = agents.get("nlp_query")({**TINY, "generator": str(tmp_path), "train_last_layers": 0})
    vector = named.init_vector(seed=0)
    # rank-8 adapters on q and v of 2 encoder self-attentions, 2 decoder self- and cross-
    assert vector.size == (2 * 2 + 2 * 4) * (64 * 8 + 8 * 64)
    local = named.prepare(named.synthetic_data(40, seed=0))
    update = named.local_update(vector, local, server_round=1, seed=0)
    assert not np.array_equal(update.vector, vector)
    with pytest.raises(MeshflError, match="Could not load seq2seq generator 'no/such-t5'"):
        agents.get("nlp_query")({**TINY, "generator": "no/such-t5"}).init_vector(seed=0)
