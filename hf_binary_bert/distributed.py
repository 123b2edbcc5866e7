"""Ending a multi-process run (`torchrun` / `accelerate launch`) without the gloo exit abort.

A gloo process group runs each collective on a C++ worker thread. When the collective is done the worker drops its
last reference to the collective's tensors, and a tensor that has a Python object needs the GIL for that. The
Trainer's last collective (the FLOPs `all_gather` of `Trainer.store_flos`) ends about a millisecond before a
non-main process of a typical script leaves Python; if the worker is still waiting for the GIL when the interpreter
finalizes, Python ends the thread inside a `noexcept` destructor and the process aborts with "terminate called
without an active exception" (SIGABRT; pytorch/pytorch#190489, still open in torch 2.13). `torchrun` then reports
a finished run as failed. Destroying the process group (accelerate's `Accelerator.end_training`) is not enough:
the worker threads outlive it.
"""

from __future__ import annotations

import time

#: how long `end_distributed` leaves the GIL free after destroying the group, in seconds: the workers take it as
#: soon as it is free (well under a millisecond when the machine is not oversubscribed); 0.1 s leaves room for a
#: worker that is not scheduled at once.
GIL_HANDOVER_S = 0.1


def end_distributed(handover_s: float = GIL_HANDOVER_S) -> bool:
    """Destroy the default process group if one is initialized, then sleep `handover_s` seconds with the GIL
    released so that the group's worker threads finish releasing their last collectives' tensors while the
    interpreter is alive (module docstring). Call it at the end of a script run with `torchrun`, on every process;
    the `hf-binary-bert` commands call it when they end, also when they fail.

    Args:
        handover_s: seconds to leave the GIL free after the group is destroyed (>= 0).

    Returns:
        whether a group was destroyed (False outside a multi-process run: nothing is done, no sleep).

    Raises:
        ValueError: `handover_s` is negative.
    """
    if handover_s < 0:
        raise ValueError(f"handover_s must be >= 0 seconds, got {handover_s}")
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()):
        return False
    dist.destroy_process_group()
    time.sleep(handover_s)  # time.sleep releases the GIL
    return True
