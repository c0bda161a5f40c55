"""Evaluation task files and registry: schema errors name file/line/field, registry loading, prompts."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from megatron_sota.errors import MegatronSotaError
from megatron_sota.evaluation.prompting import (
    check_prompts,
    exact_match_prompt,
    fewshot_indices,
    multiple_choice_context,
    multiple_choice_continuations,
)
from megatron_sota.evaluation.task_files import (
    ExactMatchItem,
    MultipleChoiceItem,
    read_exact_match,
    read_multiple_choice,
    read_text_documents,
)
from megatron_sota.evaluation.task_spec import (
    REGISTRY_DIR,
    TaskSpec,
    load_task,
    registered_tasks,
)
from tests.random_shards import write_shard

GOOD_MC = {"question": "2 + 2?", "choices": ["3", "4"], "answer": 1}


def write_jsonl(path, lines) -> str:
    with open(path, "w", encoding="utf-8") as handle:
        handle.writelines((line if isinstance(line, str) else json.dumps(line)) + "\n" for line in lines)
    return str(path)


# ---- JSONL readers ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "record, field, found",
    [
        ({"question": "q", "choices": ["a", "b"]}, "answer", "no such field"),
        ({"question": "q", "choices": ["a", "b"], "answer": 2}, "answer", "integer 2"),
        ({"question": "q", "choices": ["a", "b"], "answer": -1}, "answer", "integer -1"),
        ({"question": "q", "choices": ["a", "b"], "answer": True}, "answer", "boolean true"),
        ({"question": "q", "choices": ["a", "b"], "answer": "1"}, "answer", 'string "1"'),
        ({"question": "q", "choices": [], "answer": 0}, "choices", "list []"),
        ({"question": "q", "choices": "ab", "answer": 0}, "choices", 'string "ab"'),
        ({"question": "q", "choices": ["a", 3], "answer": 0}, "choices", "3"),
        ({"question": "", "choices": ["a"], "answer": 0}, "question", 'string ""'),
        ({"choices": ["a"], "answer": 0}, "question", "no such field"),
    ],
)
def test_multiple_choice_schema_errors_name_file_line_field(tmp_path, record, field, found):
    path = write_jsonl(tmp_path / "mc.jsonl", [GOOD_MC, "", record])
    with pytest.raises(MegatronSotaError) as err:
        read_multiple_choice(path)
    message = str(err.value)
    assert message.startswith(f"{path}:3: field '{field}': expected "), message
    assert found in message.split("found", 1)[1], message


def test_answer_out_of_range_says_the_valid_range(tmp_path):
    path = write_jsonl(tmp_path / "mc.jsonl", [{"question": "q", "choices": ["a", "b", "c"], "answer": 3}])
    with pytest.raises(MegatronSotaError, match=r"mc.jsonl:1: field 'answer': expected an integer index into 'choices' \(0 to 2\), found integer 3"):
        read_multiple_choice(path)


def test_bad_json_and_non_object_name_the_line(tmp_path):
    path = write_jsonl(tmp_path / "mc.jsonl", [GOOD_MC, '{"question": "q", "choices": ["a"],'])
    with pytest.raises(MegatronSotaError, match=r"mc\.jsonl:2: expected one JSON object per line, found invalid JSON"):
        read_multiple_choice(path)
    path = write_jsonl(tmp_path / "list.jsonl", [GOOD_MC, "[1, 2]"])
    with pytest.raises(MegatronSotaError, match=r"list\.jsonl:2: expected a JSON object, found list"):
        read_multiple_choice(path)


@pytest.mark.parametrize("reader", [read_multiple_choice, read_exact_match, read_text_documents])
def test_empty_file_is_an_error(tmp_path, reader):
    path = write_jsonl(tmp_path / "empty.jsonl", ["", "   "])
    with pytest.raises(MegatronSotaError, match=r"empty\.jsonl: expected one JSON object per line, found no records"):
        reader(path)


def test_missing_file_is_an_error(tmp_path):
    with pytest.raises(MegatronSotaError, match="nope.jsonl: No such file"):
        read_text_documents(str(tmp_path / "nope.jsonl"))


def test_readers_keep_lines_and_fields(tmp_path):
    path = write_jsonl(tmp_path / "mc.jsonl", ["", {**GOOD_MC, "subject": "math"}])
    assert read_multiple_choice(path) == [
        MultipleChoiceItem("2 + 2?", ("3", "4"), 1, 2, {**GOOD_MC, "subject": "math"})
    ]
    path = write_jsonl(tmp_path / "em.jsonl", [{"question": "q", "answer": 42}, {"problem": "p", "answer": "x + 1"}])
    items = read_exact_match(path)
    assert items[0] == ExactMatchItem("q", "42", 1, {"question": "q", "answer": 42})
    assert (items[1].question, items[1].answer, items[1].line) == ("p", "x + 1", 2)
    path = write_jsonl(tmp_path / "docs.jsonl", [{"text": "one"}, {"text": "two", "id": 7}])
    assert read_text_documents(path) == ["one", "two"]


@pytest.mark.parametrize(
    "record, field, found",
    [
        ({"question": "q"}, "answer", "no such field"),
        ({"question": "q", "answer": True}, "answer", "boolean true"),
        ({"question": "q", "answer": 1.5}, "answer", "number 1.5"),
        ({"question": "q", "answer": None}, "answer", "null"),
        ({"answer": 1}, "question", "no such field"),
    ],
)
def test_exact_match_schema_errors(tmp_path, record, field, found):
    path = write_jsonl(tmp_path / "em.jsonl", [record])
    with pytest.raises(MegatronSotaError) as err:
        read_exact_match(path)
    assert str(err.value).startswith(f"{path}:1: field '{field}': expected "), err.value
    assert found in str(err.value).split("found", 1)[1]


def test_text_documents_need_text(tmp_path):
    path = write_jsonl(tmp_path / "docs.jsonl", [{"text": "ok"}, {"body": "no"}])
    with pytest.raises(MegatronSotaError, match=r"docs\.jsonl:2: field 'text': expected a non-empty string, found no such field"):
        read_text_documents(path)


# ---- registry -----------------------------------------------------------------------------------------


def test_shipped_registry_loads_and_reads():
    from megatron_sota.evaluation.runner import check_task_data
    from megatron_sota.evaluation.task_data import read_task_items

    names = registered_tasks()
    assert {"arithmetic_mc", "arithmetic_em", "python_docs_ppl", "arithmetic_mc_gate"} <= set(names)
    readers = {"multiple_choice": read_multiple_choice, "exact_match": read_exact_match, "perplexity": read_text_documents}
    for name in names:
        spec = load_task(name)
        if spec.type == "passkey":  # generated samples, no data file (tests/unit/test_eval_passkey.py)
            assert spec.path == "" and spec.lengths and spec.depths
            continue
        if spec.type == "refusal":  # its own reader and set sizes: tests/unit/test_safety_gate.py
            continue
        assert spec.name == name and os.path.isabs(spec.path)
        if spec.format is not None:  # a benchmark format's small sample (tests/evaluation/test_benchmark_files.py)
            check_task_data(spec)
            assert 6 <= len(read_task_items(spec)) <= 30
            continue
        records = readers[spec.type](spec.path)
        assert 30 <= len(records) <= 60
    em = load_task("arithmetic_em")
    assert (em.type, em.num_fewshot, em.stop) == ("exact_match", 3, ("\n",))
    assert load_task("arithmetic_mc_gate").thresholds == {"acc": 0.9}
    assert load_task("python_docs_ppl").type == "perplexity"


def test_command_line_overrides_the_registry():
    spec = load_task("arithmetic_em", num_fewshot=0)
    assert spec.num_fewshot == 0 and spec.stop == ("\n",)
    assert load_task("arithmetic_mc", task_type="multiple_choice", num_fewshot=5).num_fewshot == 5
    with pytest.raises(MegatronSotaError, match="perplexity scores whole documents"):
        load_task("python_docs_ppl", num_fewshot=2)
    with pytest.raises(MegatronSotaError, match="task type: expected one of multiple_choice, exact_match, perplexity, passkey, refusal, code, found 'mc'"):
        load_task("arithmetic_mc", task_type="mc")


def test_unknown_name_lists_the_registered_ones():
    with pytest.raises(MegatronSotaError) as err:
        load_task("arithmetic_mcc")
    message = str(err.value)
    assert "did you mean 'arithmetic_mc'" in message
    assert "arithmetic_em, arithmetic_mc, arithmetic_mc_gate" in message and REGISTRY_DIR in message


def registry(tmp_path, text: str, data=(GOOD_MC, GOOD_MC)) -> str:
    os.makedirs(tmp_path / "reg" / "data", exist_ok=True)
    write_jsonl(tmp_path / "reg" / "data" / "t.jsonl", data)
    (tmp_path / "reg" / "t.yaml").write_text(text)
    return str(tmp_path / "reg")


def test_yaml_file_is_relative_to_the_yaml_and_keys_are_typed(tmp_path):
    reg = registry(tmp_path, 'type: multiple_choice\nfile: data/t.jsonl\nstop: "\\n"\nlimit: 1\nthresholds: {acc_norm: 1}\n')
    spec = load_task("t", registry_dir=reg)
    assert spec == TaskSpec("t", "multiple_choice", os.path.join(reg, "data", "t.jsonl"), stop=("\n",), limit=1,
                            thresholds={"acc_norm": 1.0})
    assert registered_tasks(reg) == ["t"]
    assert load_task(os.path.join(reg, "t.yaml"), num_fewshot=1) == TaskSpec(
        "t", "multiple_choice", os.path.join(reg, "data", "t.jsonl"), num_fewshot=1, stop=("\n",), limit=1,
        thresholds={"acc_norm": 1.0})


@pytest.mark.parametrize(
    "text, expected",
    [
        ("type: multiple_choice\nfile: data/t.jsonl\nnum_fewshots: 2\n",
         r"t\.yaml:3: key 'num_fewshots': unknown key; .*did you mean 'num_fewshot'"),
        ("type: multiple_choice\nfile: data/t.jsonl\nnum_fewshot: two\n",
         r"t\.yaml:3: key 'num_fewshot': expected an integer >= 0, found 'two'"),
        ("type: multiple_choice\nfile: data/t.jsonl\nnum_fewshot: true\n", r"t\.yaml:3: key 'num_fewshot': expected an integer >= 0, found True"),
        ("type: multiple_choice\nfile: t.yaml\n", r"t\.yaml:2: key 'file': expected a \.jsonl file or a \.bin/\.idx prefix, found 't\.yaml'"),
        ("type: multiple_choice\nfile: data/missing.jsonl\n", r"t\.yaml:2: key 'file': expected an existing JSONL file .*missing\.jsonl"),
        ("type: ranking\nfile: data/t.jsonl\n", r"t\.yaml:1: key 'type': expected one of multiple_choice, exact_match, perplexity, passkey, refusal, code, found 'ranking'"),
        ("file: data/t.jsonl\n", r"t\.yaml: key 'type': expected it \(required\)"),
        ("type: exact_match\nfile: data/t.jsonl\nthresholds: {acc: 0.5}\n", r"t\.yaml:3: key 'thresholds': metric 'acc': .*\(exact_match\)"),
        ("type: exact_match\nfile: data/t.jsonl\nthresholds: {exact_match: high}\n", r"t\.yaml:3: key 'thresholds': expected a mapping of metric name to number"),
        ("type: exact_match\nfile: data/t.jsonl\ntemplate: 'Q: {question} A: {answer}'\n", r"t\.yaml:3: key 'template': the question template must not show the answer"),
        ("type: exact_match\nfile: data/t.jsonl\ntemplate: 'Q: {question'\n", r"t\.yaml:3: key 'template': expected a str\.format template"),
        ("type: exact_match\nfile: data/t.jsonl\nstop: [1]\n", r"t\.yaml:3: key 'stop': expected a non-empty string or a list of them"),
        ("type: exact_match\nfile: data/t.jsonl\ntype: perplexity\n", r"t\.yaml:3: key 'type': expected once, found again \(first on line 1\)"),
        ("- a\n- b\n", r"t\.yaml: expected a mapping of task keys, found list"),
        ("type: [\n", r"t\.yaml:2: not valid YAML"),
        ("type: exact_match\nfile: data/t.jsonl\nlimit: 0\n", r"t\.yaml:3: key 'limit': expected an integer >= 1 or null, found 0"),
        ("type: exact_match\nfile: data/t.jsonl\nmax_new_tokens: 2.5\n", r"t\.yaml:3: key 'max_new_tokens': expected an integer >= 1, found 2\.5"),
        ("type: exact_match\nfile: data/t.jsonl\ntemplate: [a]\n", r"t\.yaml:3: key 'template': expected a string, found \['a'\]"),
        ("type: exact_match\nfile: data/t.jsonl\nthresholds: {exact_match: .nan}\n", r"t\.yaml:3: key 'thresholds': expected a mapping of metric name to number"),
    ],
)
def test_yaml_errors_name_file_line_and_key(tmp_path, text, expected):
    reg = registry(tmp_path, text)
    with pytest.raises(MegatronSotaError, match=expected):
        load_task("t", registry_dir=reg)


def test_every_problem_of_a_task_file_is_listed_at_once_in_line_order(tmp_path):
    reg = registry(tmp_path, (
        "type: multiple_choice\n"
        "file: data/t.jsonl\n"
        "num_fewshot: -1\n"
        "template: 'Q: {question} A: {answer}'\n"
        "shots: 2\n"
        "thresholds: {exact_match: 0.5}\n"
        "stop: ''\n"
    ))
    with pytest.raises(MegatronSotaError) as err:
        load_task("t", registry_dir=reg)
    lines = str(err.value).splitlines()
    assert [line.split(": ", 2)[1] for line in lines] == [
        "key 'num_fewshot'", "key 'template'", "key 'shots'", "key 'thresholds'", "key 'stop'"
    ], lines
    assert all(line.startswith(os.path.join(reg, "t.yaml") + ":") for line in lines)
    assert "expected an integer >= 0, found -1" in lines[0] and "must not show the answer" in lines[1]
    assert "unknown key" in lines[2] and "metric 'exact_match'" in lines[3] and "non-empty string" in lines[4]


def test_templates_are_taken_as_written_not_as_interpolations(tmp_path):
    # A valid str.format template that OmegaConf would reject as a malformed ${...} interpolation.
    reg = registry(tmp_path, 'type: multiple_choice\nfile: data/t.jsonl\ntemplate: "{question} (in ${{USD}})"\n')
    spec = load_task("t", registry_dir=reg)
    assert spec.template == "{question} (in ${{USD}})" and spec.template.format(question="q") == "q (in ${USD})"


def test_a_jsonl_path_needs_a_type_and_a_prefix_is_perplexity(tmp_path):
    path = write_jsonl(tmp_path / "my_task.jsonl", [GOOD_MC])
    with pytest.raises(MegatronSotaError, match=r"expected an existing \.jsonl file or \.bin/\.idx prefix, found no file .*other\.jsonl"):
        load_task(str(tmp_path / "other.jsonl"), task_type="exact_match", registry_dir=str(tmp_path))
    (tmp_path / "half.bin").write_bytes(b"")
    with pytest.raises(MegatronSotaError, match=r"found .*half\.bin without its other half"):
        load_task(str(tmp_path / "half"), registry_dir=str(tmp_path))
    with pytest.raises(MegatronSotaError, match="a JSONL file needs a task type"):
        load_task(path, registry_dir=str(tmp_path))
    spec = load_task(path, task_type="multiple_choice", num_fewshot=0, registry_dir=str(tmp_path))
    assert (spec.name, spec.type, spec.path, spec.is_megatron_prefix) == ("my_task", "multiple_choice", path, False)
    prefix = write_shard(str(tmp_path / "shard_text_document"), documents=3)
    for given in (prefix, prefix + ".bin"):
        spec = load_task(given, registry_dir=str(tmp_path))
        assert (spec.name, spec.type, spec.path, spec.is_megatron_prefix) == ("shard_text_document", "perplexity", prefix, True)
    with pytest.raises(MegatronSotaError, match="only for type 'perplexity'"):
        load_task(prefix, task_type="exact_match", registry_dir=str(tmp_path))
    (tmp_path / "shard.yaml").write_text("type: exact_match\nfile: shard_text_document\n")
    with pytest.raises(MegatronSotaError, match=r"shard\.yaml:2: key 'file': a \.bin/\.idx prefix .* found type 'exact_match'"):
        load_task("shard", registry_dir=str(tmp_path))
    (tmp_path / "shard.yaml").write_text("type: perplexity\nfile: shard_text_document.idx\n")
    assert load_task("shard", registry_dir=str(tmp_path)).path == prefix
    with pytest.raises(MegatronSotaError, match=r"shard\.yaml:2: key 'file': a \.bin/\.idx prefix"):
        load_task("shard", task_type="multiple_choice", registry_dir=str(tmp_path))


def test_a_prefix_with_a_truncated_index_is_named_before_any_model_is_loaded(tmp_path):
    prefix = write_shard(str(tmp_path / "cut_text_document"), documents=20)
    with open(prefix + ".idx", "r+b") as handle:
        handle.truncate(100)
    with pytest.raises(MegatronSotaError) as info:
        load_task(prefix, registry_dir=str(tmp_path))
    assert f"{prefix}.idx: expected" in str(info.value) and "the index is truncated" in str(info.value)


# ---- few-shot prompts ---------------------------------------------------------------------------------


def test_fewshot_indices_are_deterministic_distinct_and_exclude_the_item():
    for index in range(10):
        picks = fewshot_indices(10, index, 5, seed=1234)
        assert len(set(picks)) == 5 and index not in picks and all(0 <= p < 10 for p in picks)
        assert picks == fewshot_indices(10, index, 5, seed=1234)
    assert sorted(fewshot_indices(10, 3, 9, 0)) == [0, 1, 2, 4, 5, 6, 7, 8, 9]
    assert len({tuple(fewshot_indices(50, i, 3, 7)) for i in range(1, 20)}) > 1  # differ between items
    assert fewshot_indices(50, 4, 3, 7) != fewshot_indices(50, 4, 3, 8)  # and between seeds
    assert fewshot_indices(5, 0, 0, 1) == []
    with pytest.raises(MegatronSotaError, match="num_fewshot: expected at most 4 .* found 5"):
        fewshot_indices(5, 0, 5, 1)


def test_fewshot_indices_do_not_depend_on_the_hash_seed():
    code = "from megatron_sota.evaluation.prompting import fewshot_indices; print(fewshot_indices(100, 7, 5, 1234))"
    outputs = {
        subprocess.run([sys.executable, "-c", code], env={**os.environ, "PYTHONHASHSEED": seed},
                       capture_output=True, text=True, check=True).stdout
        for seed in ("1", "2")
    }
    assert outputs == {str(fewshot_indices(100, 7, 5, 1234)) + "\n"}


def mc_items():
    return [
        MultipleChoiceItem(f"q{i}", ("red", "green", "blue"), i % 3, i + 1,
                           {"question": f"q{i}", "choices": ["red", "green", "blue"], "answer": i % 3, "topic": f"t{i}"})
        for i in range(4)
    ]


def test_multiple_choice_context_and_continuations():
    items = mc_items()
    spec = TaskSpec("colors", "multiple_choice", "/x/colors.jsonl", num_fewshot=2, fewshot_seed=3,
                    template="[{topic}] {question}\n{choices_lettered}\nAnswer:", choice_template=" {letter}: {choice}")
    shots = fewshot_indices(4, 1, 2, 3)
    expected = "".join(
        f"[t{j}] q{j}\nA. red\nB. green\nC. blue\nAnswer: {'ABC'[j % 3]}: {('red', 'green', 'blue')[j % 3]}\n\n" for j in shots
    ) + "[t1] q1\nA. red\nB. green\nC. blue\nAnswer:"
    assert multiple_choice_context(spec, items, 1) == expected
    assert multiple_choice_continuations(spec, items[1]) == [" A: red", " B: green", " C: blue"]
    zero_shot = TaskSpec("colors", "multiple_choice", "/x/colors.jsonl")
    assert multiple_choice_context(zero_shot, items, 2) == "Question: q2\nAnswer:"


def test_exact_match_prompt():
    items = [ExactMatchItem(f"what is {i}+{i}?", str(2 * i), i + 1, {"problem": f"what is {i}+{i}?", "gold": 2 * i})
             for i in range(6)]
    spec = TaskSpec("add", "exact_match", "/x/add.jsonl", num_fewshot=3, fewshot_separator="\n###\n",
                    target_template=" The answer is {answer}.")
    shots = fewshot_indices(6, 4, 3, 1234)
    expected = "".join(f"Question: what is {j}+{j}?\nAnswer: The answer is {2 * j}.\n###\n" for j in shots)
    assert exact_match_prompt(spec, items, 4) == expected + "Question: what is 4+4?\nAnswer:"


def test_a_template_field_the_record_lacks_names_task_line_field():
    spec = TaskSpec("colors", "multiple_choice", "/x/colors.jsonl", template="{question} ({subject})")
    with pytest.raises(MegatronSotaError, match=r"task colors: /x/colors\.jsonl:3: template .* names field 'subject'"):
        multiple_choice_context(spec, mc_items(), 2)
    leaky = TaskSpec("colors", "multiple_choice", "/x/colors.jsonl", template="{question} {answer}")
    with pytest.raises(MegatronSotaError, match="names field 'answer' .the question template may not show the answer"):
        multiple_choice_context(leaky, mc_items(), 0)
    too_many = TaskSpec("colors", "multiple_choice", "/x/colors.jsonl", num_fewshot=4)
    with pytest.raises(MegatronSotaError, match=r"task colors \(/x/colors\.jsonl\): num_fewshot: expected at most 3"):
        multiple_choice_context(too_many, mc_items(), 0)


def test_check_prompts_finds_template_problems_before_a_model_is_loaded(tmp_path):
    path = write_jsonl(tmp_path / "mc.jsonl", [{**GOOD_MC, "subject": "math"}, GOOD_MC, {**GOOD_MC, "subject": "art"}])
    items = read_multiple_choice(path)
    spec = TaskSpec("t", "multiple_choice", path, template="[{subject}] {question}")
    with pytest.raises(MegatronSotaError, match=r"mc\.jsonl:2: template .* names field 'subject'"):
        check_prompts(spec, items)
    check_prompts(TaskSpec("t", "multiple_choice", path, template="[{subject}] {question}", limit=1), items)
    with pytest.raises(MegatronSotaError, match="num_fewshot: expected at most 2"):
        check_prompts(TaskSpec("t", "multiple_choice", path, num_fewshot=3), items)
    em = read_exact_match(write_jsonl(tmp_path / "em.jsonl", [{"question": "q", "answer": 1}, {"question": "r", "answer": 2}]))
    check_prompts(TaskSpec("e", "exact_match", path, num_fewshot=1), em)
    with pytest.raises(MegatronSotaError, match="target_template .* names field 'why'"):
        check_prompts(TaskSpec("e", "exact_match", path, num_fewshot=1, target_template=" {answer} because {why}"), em)
