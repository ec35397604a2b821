"""Consumer-group members as the tests see them: each a group_member.py process (kafka-python
or confluent-kafka) whose assignment, consumed messages and commits are followed from its event
lines, and which a test can commit, close, kill or restart.

Also the checks a group must pass whatever the client: its members split the partitions between
them, and what they consumed together is the log, each message once, except for those that a
member which died without committing had consumed and another member consumed again.
"""

import json
import subprocess
import sys
import threading
from collections import defaultdict
from pathlib import Path

from support import CLIENT_DEADLINE_S, SHOWN_MAX, Consumed, check_log, wait_until

MEMBER_PROGRAM = Path(__file__).with_name("group_member.py")
STDERR_TAIL_LINES = 40


class GroupMember:
    """One running member process; `name` says which one in failure messages."""

    def __init__(
        self,
        name,
        client,
        bootstrap,
        group,
        topic,
        log_dir,
        strategy,
        session_timeout_ms,
        instance_id=None,
        protocol="classic",
    ):
        self.name = name
        self.config = {
            "client": client,
            "bootstrap": bootstrap,
            "group": group,
            "topic": topic,
            "strategy": strategy,
            "session_timeout_ms": session_timeout_ms,
            "instance_id": instance_id,
            "protocol": protocol,  # "consumer": KIP-848 (confluent-kafka only)
        }
        self.stderr_path = Path(log_dir) / f"member-{name}.stderr"
        self._lock = threading.Lock()
        self._assignment = set()
        self._consumed = []
        self._rebalance_events = []  # (event, partitions) in the order they came
        self._answers = []  # the answers to commit commands, in order
        self._unreadable = []  # stdout lines that were not events
        with open(self.stderr_path, "wb") as stderr_file:
            self.process = subprocess.Popen(
                [sys.executable, str(MEMBER_PROGRAM), json.dumps(self.config)],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=stderr_file,
                text=True,
            )
        self._reader = threading.Thread(target=self._read_events, daemon=True)
        self._reader.start()

    def _read_events(self):
        for line in self.process.stdout:
            try:
                event = json.loads(line)
            except ValueError:
                with self._lock:
                    self._unreadable.append(line)
                continue
            with self._lock:
                self._apply(event)

    def _apply(self, event):
        kind = event["event"]
        if kind == "assigned":
            self._assignment |= set(event["partitions"])
            self._rebalance_events.append(("assigned", event["partitions"]))
        elif kind == "revoked":
            self._assignment -= set(event["partitions"])
            self._rebalance_events.append(("lost" if event["lost"] else "revoked", event["partitions"]))
        elif kind == "message":
            self._consumed.append(
                Consumed(
                    partition=event["partition"],
                    offset=event["offset"],
                    key=_bytes(event["key"]),
                    value=_bytes(event["value"]),
                    timestamp_ms=event["timestamp_ms"],
                )
            )
        elif kind in ("committed", "commit_failed"):
            self._answers.append(event)
        else:
            self._unreadable.append(json.dumps(event))

    @property
    def running(self):
        return self.process.poll() is None

    def assignment(self):
        with self._lock:
            return frozenset(self._assignment)

    def consumed(self):
        with self._lock:
            return list(self._consumed)

    def rebalance_events(self):
        """Every assignment callback so far: ("assigned" | "revoked" | "lost", partitions)."""
        with self._lock:
            return list(self._rebalance_events)

    def commit(self):
        """Commits the position after the last message consumed from each partition the member
        owns; returns {partition: offset} as committed. Fails if the client reported an error."""
        with self._lock:
            answered = len(self._answers)
        self._command("commit")
        wait_until(lambda: self._answer(answered) or not self.running, f"{self.name} to answer a commit")
        answer = self._answer(answered)
        assert answer is not None, f"{self.name} exited instead of committing:\n{self.stderr_tail()}"
        assert answer["event"] == "committed", f"{self.name} failed to commit: {answer['error']}"
        return {int(partition): offset for partition, offset in answer["offsets"].items()}

    def _answer(self, index):
        with self._lock:
            return self._answers[index] if len(self._answers) > index else None

    def close(self):
        """Closes the consumer (a dynamic member leaves the group) and waits for it to exit 0."""
        self._command("close")
        try:
            exit_code = self.process.wait(timeout=CLIENT_DEADLINE_S)
        except subprocess.TimeoutExpired:
            self.kill()
            raise AssertionError(f"{self.name} did not close within {CLIENT_DEADLINE_S:.0f} s") from None
        self._reader.join(timeout=CLIENT_DEADLINE_S)
        assert exit_code == 0, f"{self.name} exited with {exit_code}:\n{self.stderr_tail()}"

    def kill(self):
        """SIGKILL: the member leaves no word; the broker must notice by its session timeout."""
        self.process.kill()
        self.process.wait(timeout=CLIENT_DEADLINE_S)
        self._reader.join(timeout=CLIENT_DEADLINE_S)

    def _command(self, command):
        assert self.running, f"{self.name} exited with {self.process.returncode}:\n{self.stderr_tail()}"
        self.process.stdin.write(command + "\n")
        self.process.stdin.flush()

    def describe(self):
        """What the member looks like now, for failure messages."""
        with self._lock:
            state = (
                f"{self.name}: {'running' if self.running else f'exited {self.process.returncode}'}, "
                f"owns {sorted(self._assignment)}, consumed {len(self._consumed)}, "
                f"last callbacks {self._rebalance_events[-4:]}"
            )
            if self._unreadable:
                state += f", unreadable output {self._unreadable[:3]}"
        return state

    def stderr_tail(self):
        try:
            lines = self.stderr_path.read_text(errors="replace").splitlines()
        except OSError as error:
            lines = [f"(cannot read {self.stderr_path}: {error})"]
        return "\n".join([f"--- {self.name} stderr", *lines[-STDERR_TAIL_LINES:]])


def _bytes(text):
    return None if text is None else text.encode("latin-1")


def describe(members):
    return "\n".join(member.describe() for member in members)


def end_offsets(acked, partition_count):
    """partition -> the offset after its last acknowledged message (`acked`: message ->
    (partition, offset)), which must cover all `partition_count` partitions."""
    ends = {}
    for partition, offset in acked.values():
        ends[partition] = max(ends.get(partition, 0), offset + 1)
    assert sorted(ends) == list(range(partition_count)), f"messages landed only in partitions {sorted(ends)}"
    return ends


def values(sent):
    return [message.value for message in sent]


def consumed_by(members):
    return [message for member in members for message in member.consumed()]


def wait_for(members, condition, what, deadline_s=CLIENT_DEADLINE_S):
    """support.wait_until, with the members' state in the failure message."""
    try:
        return wait_until(condition, what, deadline_s=deadline_s)
    except AssertionError as error:
        raise AssertionError(f"{error}\n{describe(members)}") from None


def wait_for_split(members, partition_count, deadline_s=CLIENT_DEADLINE_S):
    """Waits until the members own every partition between them, each partition once, as evenly
    as possible (sizes differ by at most one); returns {member name: partitions}."""

    def split():
        owned = [member.assignment() for member in members]
        sizes = [len(partitions) for partitions in owned]
        everything = set().union(*owned)
        if (
            sum(sizes) == partition_count
            and everything == set(range(partition_count))
            and max(sizes) - min(sizes) <= 1
        ):
            return {member.name: partitions for member, partitions in zip(members, owned, strict=True)}
        return None

    return wait_for(members, split, "the members to split the partitions", deadline_s)


def wait_for_values(members, values, deadline_s=CLIENT_DEADLINE_S):
    """Waits until the members together have consumed every one of `values`."""
    wanted = set(values)

    def missing():
        return wanted - {message.value for member in members for message in member.consumed()}

    wait_for(
        members,
        lambda: not missing(),
        f"the group to consume {len(wanted)} message(s)",
        deadline_s,
    )


def commit_all(members):
    """Each member commits; returns {partition: offset} over the group (a partition committed
    by two members would be a split-brain assignment)."""
    committed = {}
    for member in members:
        for partition, offset in member.commit().items():
            assert partition not in committed, (
                f"{member.name} committed partition {partition}, which another member committed too\n"
                f"{describe(members)}"
            )
            committed[partition] = offset
    return committed


def check_group_log(consumed, sent, first_offsets=None, redelivered=frozenset()):
    """Checks what a group's members consumed together against the sent messages (as
    support.check_log does for one consumer), allowing a message at (partition, offset) in
    `redelivered` to be consumed twice: a member died after consuming it and before committing.
    """
    by_position = defaultdict(list)
    for message in consumed:
        by_position[(message.partition, message.offset)].append(message)
    repeated = {position: copies for position, copies in by_position.items() if len(copies) > 1}
    not_allowed = sorted(
        position
        for position, copies in repeated.items()
        if position not in redelivered or len(copies) > 2 or copies[0] != copies[1]
    )
    assert not not_allowed, (
        f"{len(not_allowed)} message(s) consumed more than once that had been committed (or differed "
        f"between copies), at (partition, offset): {not_allowed[:SHOWN_MAX]}"
    )
    once = [copies[0] for _, copies in sorted(by_position.items())]
    check_log(once, sent, first_offsets=first_offsets)
