"""Which tests prove each row of the Guarantees table in docs/guarantees.md.

Keyed by the row's first cell as tests/unit/test_guarantees_map.py's ``row_key`` reads it (backticks
dropped, a parenthesised aside and what follows it dropped, lower case, spaces collapsed); each value
lists pytest node ids, ``path::test_name`` (a parametrised case as ``path::test_name[id]``). A test
moved or renamed changes its node id here, and nowhere else.

A row with no test yet is in UNPROVEN, with what is missing: the table still makes that claim.
"""

from __future__ import annotations

FAULTS = "tests/fault/test_faults.py"
RESTARTS = "tests/fault/test_restarts.py"
LISTENERS = "tests/e2e/test_listeners.py"
STREAM_LIMITS = "tests/e2e/test_stream_limits.py"
START_FAILURES = "tests/e2e/test_start_failures.py"
INFLUXDB = "tests/sinks/test_influxdb_sink.py"
KAFKA_DELIVERY = "tests/kafka/test_kafka_delivery.py"

PROOFS: dict[str, list[str]] = {
    "bad input": [
        "tests/fault/test_fuzz_receiver.py::test_a_million_hostile_datagrams_break_nothing",
        "tests/unit/test_receiver_loop.py::test_bad_lines_are_counted_by_reason_and_their_neighbours_kept",
        f"{LISTENERS}::test_line_too_long_is_counted_and_its_neighbours_survive",
        "tests/unit/test_parser_properties.py::test_every_line_is_a_sample_or_a_counted_bad_line",
    ],
    "a raw relay destination": [
        "tests/e2e/test_relay.py::test_a_destination_with_nothing_bound_costs_nothing_and_every_line_it_missed_is_counted",
        "tests/e2e/test_relay.py::test_every_line_read_on_every_listener_arrives_unchanged_and_a_reload_moves_it",
        "tests/unit/test_relay.py::test_a_destination_with_nothing_bound_counts_every_line_and_is_sent_to_once_it_is_up",
        "tests/unit/test_relay.py::test_a_name_that_does_not_resolve_counts_its_lines_and_lines_too_long_for_udp_count_everywhere",
    ],
    "a rule drops a metric": [
        "tests/e2e/test_rules.py::test_dotted_names_become_one_name_with_tags_drops_are_counted_and_a_reload_changes_the_rule",
        "tests/unit/test_receiver_rules.py::test_what_each_rule_maps_and_drops_is_counted_in_the_figures_and_the_self_metrics",
        "tests/unit/test_window.py::test_a_rule_that_renames_a_flood_of_names_into_one_is_still_bounded_by_the_series_limit",
    ],
    "udp arrives faster than the receiver reads": [
        # read + kernel_drops == sent, the drops read from /proc/net/udp.
        "tests/fault/test_fuzz_receiver.py::test_a_million_hostile_datagrams_break_nothing",
    ],
    "a client holds many idle tcp or unix stream connections": [
        f"{STREAM_LIMITS}::test_1024_idle_connections_do_not_lock_out_a_new_client",
        f"{STREAM_LIMITS}::test_at_the_global_limit_a_new_client_takes_the_longest_idle_ones_place",
        f"{STREAM_LIMITS}::test_a_peer_holds_at_most_its_cap_and_every_refusal_is_counted",
        f"{STREAM_LIMITS}::test_an_idle_connection_is_closed_after_the_timeout_and_its_unfinished_line_counted",
        f"{LISTENERS}::test_idle_and_half_sent_connections_hold_nothing_up",
    ],
    "a unixgram:// sender sends faster than the receiver reads": [
        f"{LISTENERS}::test_a_burst_of_500_datadog_increments_over_the_unix_socket_is_delivered_or_refused_to_the_client",
        f"{LISTENERS}::test_datadog_bursts_the_kernels_unixgram_queue_can_hold_arrive_whole",
        f"{LISTENERS}::test_what_a_unixgram_socket_refuses_a_sender_sees_and_the_rest_arrives",
        f"{LISTENERS}::test_the_log_says_when_the_kernels_unixgram_queue_is_short",
        f"{RESTARTS}::test_a_receiver_restarted_in_place_hands_on_what_its_unixgram_reader_held",
    ],
    "a shard restarted": [
        f"{RESTARTS}::test_every_shard_restarted_at_the_start_middle_and_end_of_an_interval",
        "tests/unit/test_shard_loop.py::test_a_restart_hands_the_open_intervals_on_and_the_next_instance_flushes_each_once",
        "tests/unit/test_shard_loop.py::test_a_restarting_shard_waits_for_its_receivers_paused_batch_and_merges_what_came_before",
        "tests/unit/test_handoff.py::test_a_restart_mid_interval_flushes_the_interval_once_as_if_never_restarted",
        "tests/unit/test_handoff.py::test_an_interval_that_ended_while_no_instance_ran_is_flushed_at_start_with_its_own_timestamp",
        "tests/unit/test_handoff.py::test_a_foreign_or_stale_handoff_is_refused",
    ],
    "the receiver restarted with pystatsd restart receiver": [
        f"{RESTARTS}::test_a_receiver_restarted_in_place_keeps_its_sockets_and_loses_nothing",
    ],
    "the receiver restarted with supervisorctl restart receiver": [
        # What these show: the others keep running and a planned restart counts nothing; the UDP lost
        # in the gap is, as the row says, not counted (so not asserted either).
        "tests/e2e/test_pipeline.py::test_restarting_one_stage_leaves_the_others_running",
        f"{FAULTS}::test_kill_9_of_the_receiver_with_open_batches_the_ledger_counts_its_loss_exactly",
    ],
    "the forwarder restarted": [
        f"{RESTARTS}::test_the_forwarder_restarted_under_traffic",
        "tests/unit/test_forwarder_loop.py::test_a_stop_for_a_restart_pauses_the_shards_and_takes_what_they_sent_before_their_pause",
        "tests/unit/test_shard_loop.py::test_a_forwarder_pause_holds_the_flushes_after_the_paused_one_until_it_ends",
        "tests/unit/test_outbox.py::test_a_forwarder_pause_gets_what_was_queued_then_one_paused_flush_then_nothing_until_it_ends",
    ],
    "pystatsd reload or systemctl reload pystatsd": [
        f"{INFLUXDB}::test_a_reload_that_fixes_influxdbs_url_delivers_what_the_wrong_one_held_exactly_once",
        f"{INFLUXDB}::test_a_reload_that_adds_influxdb_and_removes_the_file_sink_loses_and_repeats_nothing",
        "tests/e2e/test_named_sinks.py::"
        "test_two_file_sinks_and_a_console_by_name_each_get_every_aggregate_through_a_reload_of_one",
        "tests/unit/test_forwarder_loop.py::"
        "test_a_sink_a_reload_removes_drains_on_its_own_and_what_it_still_holds_is_counted_removed",
        "tests/unit/test_forwarder_loop.py::test_a_reload_swaps_the_sinks_from_the_next_flush",
        "tests/unit/test_shard_loop.py::test_a_reload_applies_from_the_next_interval_not_the_open_one",
        f"{RESTARTS}::test_a_reload_refuses_a_bad_config_and_names_what_waits_for_a_restart",
        f"{RESTARTS}::test_a_config_with_a_problem_restarts_nothing",
    ],
    "pystatsd reshard n": [
        f"{RESTARTS}::test_reshard_2_to_4_to_3_under_traffic",
        f"{RESTARTS}::test_reshard_under_the_repo_s_own_supervisord_conf",
        "tests/unit/test_gauge_carry.py::test_a_value_set_since_the_switch_stays_and_deltas_apply_on_the_carried_base",
        "tests/unit/test_shard_loop.py::test_a_new_ring_s_shard_holds_its_first_interval_until_every_retiring_shard_carried",
        "tests/unit/test_shard_loop.py::test_a_new_ring_s_shard_that_wakes_late_flushes_its_first_interval_with_the_carried_gauges",
    ],
    "supervisorctl shutdown, systemctl stop pystatsd, supervisorctl stop all": [
        f"{FAULTS}::test_shutdown_mid_interval_and_start_again_loses_nothing",
        f"{FAULTS}::test_stop_all_in_one_pass_mid_interval_loses_nothing",
        f"{KAFKA_DELIVERY}::test_planned_stop_delivers_the_partial_interval",
        "tests/unit/test_lifecycle.py::test_stopwaitsecs_covers_the_stage_s_stop_budget_and_the_margin",
    ],
    "kill -9 of a shard": [
        f"{FAULTS}::test_kill_9_of_a_shard_heals_within_2s_and_the_ledger_counts_its_loss_exactly",
    ],
    "kill -9 of the forwarder": [
        f"{FAULTS}::test_kill_9_of_the_forwarder_shards_hold_their_flushes_and_the_ledger_counts_the_rest",
        "tests/unit/test_forwarder_loop.py::test_the_ledger_records_coverage_and_counts_what_a_crashed_forwarder_held",
    ],
    "kill -9 of the receiver": [
        f"{FAULTS}::test_kill_9_of_the_receiver_with_open_batches_the_ledger_counts_its_loss_exactly",
        "tests/unit/test_unsent.py::test_closing_headers_end_each_stream_past_what_was_handed_on_and_held",
    ],
    "a sink's destination is down": [
        "tests/fault/test_sink_drops.py::test_the_file_sink_on_a_full_disk_writes_each_aggregate_once_or_counts_it_dropped",
        "tests/fault/test_sink_drops.py::test_a_full_buffer_drop_beside_a_healthy_sink_is_counted_once_and_never_as_a_loss",
        f"{KAFKA_DELIVERY}::test_broker_outage_of_30s_loses_nothing_and_duplicates_nothing",
        f"{KAFKA_DELIVERY}::test_buffer_too_small_for_the_outage_drops_oldest_and_counts_exactly",
        f"{INFLUXDB}::test_a_stopped_server_loses_nothing_and_holds_up_no_other_sink",
        "tests/sinks/test_graphite_sink.py::test_a_stopped_server_loses_nothing",
    ],
    "kafka: retries, broker failover": [
        # No duplicates within one run; the same pystatsd-id after a forwarder restart has no test yet.
        f"{KAFKA_DELIVERY}::test_broker_outage_of_30s_loses_nothing_and_duplicates_nothing",
        "tests/kafka/test_kafka_sink.py::test_json_format_is_the_file_sinks_aggregates_and_kcat_agrees",
    ],
    "a tag explosion": [
        "tests/fault/test_cardinality.py::test_a_million_distinct_tag_values_fold_into_the_overflow_series",
    ],
    "a flood of distinct gauges": [
        "tests/fault/test_gauge_flood.py::test_a_flood_of_distinct_gauges_is_bounded_per_shard_and_counted",
        "tests/unit/test_shard.py::test_new_gauges_past_gauges_limit_are_dropped_and_reported_with_the_interval",
        "tests/unit/test_shard.py::test_a_flush_handed_on_after_the_next_interval_ended_is_an_overrun",
    ],
    "a config error, a port taken, a refused run directory": [
        f"{START_FAILURES}::test_run_names_a_taken_port_and_its_holder_and_starts_nothing",
        f"{START_FAILURES}::test_run_refuses_a_run_directory_others_may_write",
        f"{START_FAILURES}::test_run_refuses_a_run_directory_an_instance_already_runs_in",
        f"{START_FAILURES}::test_a_receiver_whose_port_is_taken_is_not_restarted_in_a_loop",
        f"{START_FAILURES}::test_a_shard_with_a_bad_config_is_given_up_on_and_status_names_the_key",
        f"{START_FAILURES}::test_run_exits_78_with_each_reason_when_no_stage_can_start",
        "tests/e2e/test_pipeline.py::test_bad_config_ends_fatal_with_the_key_named",
        "tests/packaging/test_cli.py::test_run_refuses_a_bad_config_before_starting_anything",
    ],
    "dogstatsd events and service checks": [
        "tests/e2e/test_dogstatsd.py::test_events_and_service_checks_reach_the_file_sink_as_records_counted_per_kind",
        "tests/unit/test_receiver_loop.py::test_events_and_service_checks_go_to_the_forwarder_as_records_counted_per_kind",
        "tests/unit/test_forwarder_loop.py::test_records_reach_only_the_sinks_that_carry_them_and_no_ledger",
        "tests/unit/test_forwarder_loop.py::"
        "test_records_no_sink_carries_are_counted_and_malformed_ones_are_bad_messages",
    ],
    "a shard is slow or stopped": [
        "tests/unit/test_receiver_loop.py::"
        "test_a_stopped_shard_costs_only_its_own_batches_each_counted_dropped_once_its_queue_is_full",
    ],
}

#: Rows the table states that no test proves yet, with what a test would have to show.
UNPROVEN: dict[str, str] = {}
