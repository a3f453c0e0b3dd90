"""The plan: chunks × aspects × clones, and every built-in section recipe can be planned."""

from __future__ import annotations

import pytest

from parallelize import RunOptions, run_section
from parallelize.plan.chunking import Chunk, Part
from parallelize.plan.tasks import matrix_clones, section_tasks
from parallelize.recipe.load import builtin_recipes, load_recipe, parse_recipe


def chunks(n: int) -> list[Chunk]:
    return [Chunk(i, (Part(f"f{i}.txt", f"text {i}\n", 3),)) for i in range(n)]


SECTION_RECIPES = sorted(
    name for name, path in builtin_recipes().items() if load_recipe(path).mode == "section"
)


@pytest.mark.parametrize("name", SECTION_RECIPES)
def test_every_builtin_section_recipe_plans(name: str, make_tree, tmp_path, monkeypatch) -> None:
    recipe = load_recipe(builtin_recipes()[name])
    make_tree({"a.md": "# A\ntext\n", "b.py": "x = 1\n"})
    monkeypatch.chdir(tmp_path)
    result = run_section(["src"], recipe, options=RunOptions(dry_run=True))
    assert result.tasks and result.dry_run


def test_matrix_clones_are_the_product_in_declaration_order() -> None:
    assert matrix_clones({}) == [{}]
    clones = matrix_clones({"tone": ["a", "b"], "locale": ["x", "y", "z"]})
    assert len(clones) == 6
    assert clones[0] == {"tone": "a", "locale": "x"} and clones[-1] == {"tone": "b", "locale": "z"}


def test_tasks_are_chunks_times_aspects_times_clones() -> None:
    recipe = parse_recipe(
        "prompt: '{{ aspect }} {{ locale }} {{ instructions }} {{ input }}'\n"
        "aspects: [{name: s, instructions: SEC}, p]\n"
        "matrix: {locale: [fr, de, it]}\n",
        source="r.yaml",
    )
    tasks = section_tasks(recipe, chunks(2), model="m")
    assert len(tasks) == 2 * 2 * 3
    assert [t.index for t in tasks] == list(range(12))
    first = tasks[0]
    assert first.label == "chunk 1/2 [s] [fr]"
    assert first.source.aspect == "s" and first.source.matrix == {"locale": "fr"}
    assert first.request.messages[-1]["content"].startswith("s fr SEC <file")
    contents = {t.request.messages[-1]["content"] for t in tasks}
    assert len(contents) == 12  # no two clones or aspects send the same request
    assert {t.request.params.get("response_format") for t in tasks} == {None}


@pytest.mark.parametrize("llama", [False, True], ids=["openai-like", "reports-window"])
@pytest.mark.parametrize("chunking", ["{by: file}", "{chunks: 3}"])
def test_the_template_is_checked_once_per_run(
    llm, make_tree, monkeypatch: pytest.MonkeyPatch, llama: bool, chunking: str
) -> None:
    """However often the plan is made (local pass, server's window, re-plan), one check."""
    import parallelize.plan.tasks as tasks_module
    import parallelize.run as run_module

    checks = []
    original = tasks_module.check_section_template

    def counting(recipe):
        checks.append(recipe.name)
        return original(recipe)

    monkeypatch.setattr(tasks_module, "check_section_template", counting)
    monkeypatch.setattr(run_module, "check_section_template", counting)
    llm.llama = llama
    llm.context_window = 4_096
    tree = make_tree({f"f{i}.md": f"# File {i}\n" + "word " * 300 for i in range(4)})
    recipe = parse_recipe(
        f"prompt: 'Sum up {{{{ input }}}}'\nmodel: test-model\nchunking: {chunking}\n",
        source="r.yaml",
    )
    result = run_section([str(tree)], recipe, options=RunOptions(cache=False))
    assert result.exit_code == 0 and len(llm.requests) == len(result.tasks) >= 1
    assert checks == ["r"]
