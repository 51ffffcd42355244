

def test_executor_record_ids_parse_back():
    import pytest

    from sprint.curate.records import executor_record_id, parse_executor_record_id

    assert parse_executor_record_id(executor_record_id("countdown-train-0-000012", 3, 5)) == \
        ("countdown-train-0-000012", 3, 5)
    assert parse_executor_record_id(executor_record_id("a#exec-b", 1, 2)) == ("a#exec-b", 1, 2)
    for bad in ("plain-id", "x#exec-1", "x#exec-a.2"):
        with pytest.raises(ValueError, match="not an executor record id"):
            parse_executor_record_id(bad)
