"""``tandem canary``: move a candidate version's share of users through the stages and roll it
back automatically when it is worse (issue 21).

``tandem canary run --gateway HOST:PORT [--gateway ...]`` drives the ``CanaryService`` of every
gateway replica with :class:`tandem.canary.CanaryController`: 1% → 10% → 50% → 100% by
default, judged on the replicas' per-arm windows (error rate, p99 latency) and on quality:

* with ``--feedback-store`` (the SQLite store ``tandem stream feedback`` fills, or one this
  command fills itself with ``--follow``): interleaving preferences (sign test) or, in split
  mode, per-request CTR (two-proportion z-test);
* without it (split mode only): the same CTR counts the gateways' ``FeedbackService`` keeps
  per arm (``tandem_arm_{feedback,clicked}_requests_total``).

Thresholds come from the options, over ``--policy FILE`` (CanaryPolicy JSON) or, without it,
the chart's ``TANDEM_CANARY_POLICY``. Exit codes: 0 promoted, 3 rolled back, 4 still undecided at ``--timeout-s`` (the share
stays where it is, for a person to judge), 1 a gateway did not answer, 2 bad arguments.
``tandem canary status`` prints the plan and windows; ``tandem canary set --share 0`` is the
manual rollback.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer

app = typer.Typer(help="Canary of a candidate version: staged share, automatic rollback.", no_args_is_help=True)

EXIT_PROMOTED, EXIT_DOWN, EXIT_USAGE, EXIT_ROLLED_BACK, EXIT_UNDECIDED = 0, 1, 2, 3, 4
POLICY_ENV = "TANDEM_CANARY_POLICY"
"""The chart's policy (JSON), read when ``--policy`` is not given."""

Gateways = Annotated[list[str], typer.Option(
    "--gateway", help="host:port of a gateway replica; repeat for every replica (each gets the plan).")]
Token = Annotated[str | None, typer.Option(envvar="TANDEM_ADMIN_TOKEN", help="Admin bearer token.")]
TlsCa = Annotated[Path | None, typer.Option(help="PEM CA of the gateways (turns TLS on).")]


def _control(gateways: list[str], token: str | None, tls_ca: Path | None) -> Any:
    from tandem_app.cli._options import server_address
    from tandem.errors import InvalidInput
    from tandem_services.canary import RemoteArms
    from tandem_services.client import ChannelOptions

    try:
        targets = [server_address(g, "--gateway") for g in gateways]
        return RemoteArms(targets, ChannelOptions(token=token, tls_ca=tls_ca))
    except InvalidInput as exc:
        raise typer.BadParameter(str(exc), param_hint="--gateway") from None


def build_policy(policy_file: Path | None, overrides: dict[str, Any]) -> Any:
    """A :class:`~tandem.canary.CanaryPolicy` from ``policy_file`` (JSON; else the chart's
    ``TANDEM_CANARY_POLICY`` variable, if set) and the options given."""
    import os

    from pydantic import ValidationError

    from tandem.canary import CanaryPolicy

    body: dict[str, Any] = {}
    if policy_file is None and os.environ.get(POLICY_ENV):
        try:
            body = json.loads(os.environ[POLICY_ENV])
        except json.JSONDecodeError as exc:
            raise typer.BadParameter(f"{POLICY_ENV} is not JSON: {exc}", param_hint="--policy") from None
        if not isinstance(body, dict):
            raise typer.BadParameter(f"{POLICY_ENV} must hold a JSON object", param_hint="--policy")
    elif policy_file is not None:
        try:
            body = json.loads(policy_file.read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise typer.BadParameter(f"cannot read {policy_file}: {exc}", param_hint="--policy") from None
        if not isinstance(body, dict):
            raise typer.BadParameter(f"{policy_file} must hold a JSON object", param_hint="--policy")
        body.pop("enabled", None)  # the chart's switch, not a threshold
    body |= {k: v for k, v in overrides.items() if v is not None}
    try:
        return CanaryPolicy(**body)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "policy"
        raise typer.BadParameter(f"`{where}`: {first['msg']}", param_hint="--policy/options") from None


def _stages(value: str | None) -> tuple[float, ...] | None:
    if value is None:
        return None
    try:
        return tuple(float(s) for s in value.split(",") if s.strip())
    except ValueError:
        raise typer.BadParameter(f"must be comma-separated shares like 0.01,0.1,0.5,1, got {value!r}",
                                 param_hint="--stages") from None


@app.command("run")
def run(
    gateway: Gateways,
    feedback_store: Annotated[Path | None, typer.Option(
        help="Feedback store to judge quality from (needed for interleave mode).")] = None,
    follow: Annotated[bool, typer.Option(
        help="Replay tandem.feedback into --feedback-store while running (TANDEM_KAFKA_* settings).")] = False,
    policy: Annotated[Path | None, typer.Option(
        help="JSON with CanaryPolicy fields (default: $TANDEM_CANARY_POLICY, the chart's gateway.canary.policy).")] = None,
    stages: Annotated[str | None, typer.Option(help="Shares, e.g. 0.01,0.1,0.5,1 (last must be 1).")] = None,
    mode: Annotated[str | None, typer.Option(help="interleave or split.")] = None,
    min_requests: Annotated[int | None, typer.Option(help="Candidate requests a stage needs.")] = None,
    min_quality: Annotated[int | None, typer.Option(help="Requests with feedback a stage needs.")] = None,
    alpha: Annotated[float | None, typer.Option(help="Significance level of the quality tests.")] = None,
    max_error_rate_increase: Annotated[float | None, typer.Option(help="Allowed error-rate increase.")] = None,
    max_p99_ratio: Annotated[float | None, typer.Option(help="Allowed p99 as a multiple of current's.")] = None,
    p99_slack_ms: Annotated[float | None, typer.Option(help="Absolute p99 allowance, ms.")] = None,
    poll_s: Annotated[float, typer.Option(help="Seconds between judgements.")] = 15.0,
    timeout_s: Annotated[float | None, typer.Option(help="Give up (share unchanged) after this long.")] = None,
    token: Token = None,
    tls_ca: TlsCa = None,
) -> None:
    """Run the canary to promotion or rollback (see the module docstring for the exit codes)."""
    import grpc

    from tandem.canary import CanaryController, read_evidence, split_evidence

    pol = build_policy(policy, {"stages": _stages(stages), "mode": mode, "min_requests": min_requests,
                                "min_quality": min_quality, "alpha": alpha,
                                "max_error_rate_increase": max_error_rate_increase, "max_p99_ratio": max_p99_ratio,
                                "p99_slack_ms": p99_slack_ms})
    if not poll_s > 0:
        raise typer.BadParameter("must be > 0", param_hint="--poll-s")
    if feedback_store is None and (pol.mode == "interleave" or follow):
        raise typer.BadParameter("interleave mode and --follow need --feedback-store (or use --mode split)",
                                 param_hint="--feedback-store")
    control = _control(gateway, token, tls_ca)
    store = consumer = None
    try:
        if feedback_store is not None:
            from tandem.feedback.store import FeedbackStore

            store = FeedbackStore(feedback_store)
            evidence, position = (lambda since: read_evidence(store, since)), (lambda: store.seq)
            if follow:
                consumer = _follow(store)
        else:
            evidence, position = (lambda since: split_evidence(control.windows())), (lambda: 0)
        controller = CanaryController(pol, control, evidence, position)
        outcome = _drive(controller, poll_s, timeout_s)
    except grpc.RpcError as exc:
        typer.echo(f"tandem canary: a gateway failed: {exc.code().name}: {exc.details()}", err=True)
        _roll_back_reachable(control)
        raise typer.Exit(EXIT_DOWN) from None
    finally:
        if consumer is not None:
            consumer.stop()
        if store is not None:
            store.close()
        control.close()
    if outcome.rolled_back_at is not None:
        raise typer.Exit(EXIT_ROLLED_BACK)
    raise typer.Exit(EXIT_PROMOTED if controller.done else EXIT_UNDECIDED)


def _drive(controller: Any, poll_s: float, timeout_s: float | None) -> Any:
    """Step ``controller`` every ``poll_s`` until it is done or ``timeout_s`` passed; echo each change."""
    import time

    started = time.monotonic()
    decision = controller.start()
    while True:
        if decision.action != "hold":
            typer.echo(f"{decision.action} share={decision.share:g}: {decision.reason}")
        if controller.done or (timeout_s is not None and time.monotonic() - started > timeout_s):
            return controller.outcome
        time.sleep(poll_s)
        decision = controller.step()


def _roll_back_reachable(control: Any) -> None:
    """Share 0 on every replica that still answers: a canary that lost sight of a gateway
    cannot judge the candidate, so it stops serving it where it can."""
    for target, error in control.roll_back_each():
        typer.echo(f"{'could not roll back' if error else 'rolled back'} on {target}{': ' + error if error else ''}",
                   err=True)


def _follow(store: Any) -> Any:
    """Start replaying the feedback topic into ``store`` in a background thread."""
    import threading

    from tandem.feedback.stream import feedback_consumer

    consumer = feedback_consumer(store)
    threading.Thread(target=consumer.run, name="canary-feedback", daemon=True).start()
    return consumer


@app.command("status")
def status(gateway: Gateways, token: Token = None, tls_ca: TlsCa = None) -> None:
    """Print each replica's plan and per-arm windows."""
    import grpc

    control = _control(gateway, token, tls_ca)
    try:
        for target, st in zip(control.targets, control.status(), strict=True):
            typer.echo(f"{target}: share={st.share:g} mode={st.mode} candidate={'yes' if st.has_candidate else 'no'}")
            for arm, c in sorted(st.arms.items()):
                ctr = c.clicked_requests / c.feedback_requests if c.feedback_requests else 0.0
                typer.echo(f"  {arm:9s} requests={c.requests} errors={c.errors} p99={c.p99_ms:.1f}ms "
                           f"feedback={c.feedback_requests} ctr={ctr:.3f}")
    except grpc.RpcError as exc:
        typer.echo(f"tandem canary: {exc.code().name}: {exc.details()}", err=True)
        raise typer.Exit(EXIT_DOWN) from None
    finally:
        control.close()


@app.command("set")
def set_share(
    gateway: Gateways,
    share: Annotated[float, typer.Option(help="Share of users for the candidate, 0..1 (0 = roll back).")],
    mode: Annotated[str, typer.Option(help="split or interleave.")] = "split",
    token: Token = None,
    tls_ca: TlsCa = None,
) -> None:
    """Set the share on every replica by hand (``--share 0`` rolls back)."""
    import grpc

    control = _control(gateway, token, tls_ca)
    try:
        control.reset_windows()
        control.set_plan(share, mode)
    except grpc.RpcError as exc:
        code = EXIT_USAGE if exc.code() == grpc.StatusCode.INVALID_ARGUMENT else EXIT_DOWN
        typer.echo(f"tandem canary: {exc.code().name}: {exc.details()}", err=True)
        raise typer.Exit(code) from None
    finally:
        control.close()
    typer.echo(f"share={share:g} mode={mode} on {len(control.targets)} gateway(s)")


# --------------------------------------------------------------------------- tandem serve options
# The candidate version and the feedback sink of `tandem serve gateway|--all-in-one`, here so
# serve.py only names them (see canary_parts).

CandidateGenerative = Annotated[str | None, typer.Option(
    help="host:port of a generative RetrieverService serving the candidate version (its model + adapter): "
         "turns the canary on (tandem canary run moves the share).")]
CandidateModel = Annotated[Path | None, typer.Option(
    help="Candidate generative model directory (all-in-one): turns the canary on.")]
CandidateAdapter = Annotated[Path | None, typer.Option(help="Adapter folder merged into --candidate-model.")]
CandidateFusionModel = Annotated[Path | None, typer.Option(
    help="The candidate's learned fusion model (default: current's fusion).")]
CanaryShare = Annotated[float, typer.Option(
    help="Share of users (0..1) routed to the candidate at start; `tandem canary run` moves it.")]
CanaryMode = Annotated[str, typer.Option(help="interleave (team-draft lists of both arms) or split.")]
CanaryPolicyFile = Annotated[Path | None, typer.Option(
    help="CanaryPolicy JSON (stages and thresholds, split mode): run the controller inside this server on its "
         "own per-arm windows, rolling back automatically.")]
FeedbackKafka = Annotated[bool, typer.Option(
    help="FeedbackService writes to the tandem.feedback topic (TANDEM_KAFKA_* settings).")]
FeedbackFile = Annotated[Path | None, typer.Option(
    help="FeedbackService appends events to this JSONL file (no broker; `tandem stream feedback --from-file`).")]


def canary_parts(make_candidate: Any, *, share: float, mode: str, policy_file: Path | None,
                 feedback_kafka: bool, feedback_file: Path | None, poll_s: float = 15.0) -> dict[str, Any]:
    """``candidate``, ``arms`` and ``feedback`` keyword arguments of the gateway servers.

    ``make_candidate()`` builds the candidate searcher (``None``: no candidate version, then
    the share must be 0). With ``policy_file`` a daemon thread runs the controller on the
    server's own :class:`~tandem.canary.Arms` (evidence: the split CTR its FeedbackService counts).
    """
    import threading

    from tandem.canary import Arms, CanaryController, split_evidence
    from tandem.errors import InvalidInput

    if feedback_kafka and feedback_file is not None:
        raise typer.BadParameter("give --feedback-kafka or --feedback-file, not both", param_hint="--feedback-file")
    try:
        arms = Arms(share, mode)
    except InvalidInput as exc:
        raise typer.BadParameter(str(exc), param_hint="--canary-share/--canary-mode") from None
    candidate = make_candidate() if make_candidate is not None else None
    if candidate is None and (share > 0 or policy_file is not None):
        raise typer.BadParameter("--canary-share/--canary-policy need a candidate version "
                                 "(--candidate-generative, --candidate-model or --candidate-fusion-model)")
    if policy_file is not None:
        policy = build_policy(policy_file, {})
        if policy.mode != "split":
            raise typer.BadParameter("an in-process canary judges split traffic (set \"mode\": \"split\"); "
                                     "interleaving needs `tandem canary run --feedback-store`", param_hint="--canary-policy")
        controller = CanaryController(policy, arms, lambda since: split_evidence(arms.windows()), lambda: 0)
        threading.Thread(target=controller.run, kwargs={"poll_s": poll_s}, name="canary", daemon=True).start()
    feedback: Any = None
    if feedback_file is not None:
        from tandem.feedback.stream import JsonlFeedbackSink

        feedback = JsonlFeedbackSink(feedback_file)
    elif feedback_kafka:
        from tandem.feedback.stream import KafkaFeedbackSink

        feedback = KafkaFeedbackSink()
    return {"candidate": candidate, "arms": arms, "feedback": feedback}
