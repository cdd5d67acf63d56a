"""What a benchmark row reports beside the metrics: peak GPU memory, throughputs, the hardware it ran on."""
import gc
import os
import platform

import torch


def reset_peak_gpu_memory():
    """Start a new peak; the previous run's model and optimiser are freed first (an optimiser hook and a bound
    method keep reference cycles that only the garbage collector breaks), or they would count towards this run."""
    if torch.cuda.is_available():
        gc.collect()
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()


def peak_gpu_memory_mb():
    """Peak memory allocated by torch on the current GPU since the last reset, in MiB; None without a GPU."""
    if not torch.cuda.is_available():
        return None
    return torch.cuda.max_memory_allocated() / 2**20


def per_second(count, seconds):
    """count / seconds, None when either is unknown or the time is zero."""
    if count is None or not seconds:
        return None
    return count / seconds


def cpu_name():
    try:
        with open("/proc/cpuinfo") as handle:
            for line in handle:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def hardware():
    """One line: the GPU (torch.cuda) or 'no GPU', the CPU model, the cores this process may use and torch's CPU
    threads, torch's version."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    threads = torch.get_num_threads()
    return f"{gpu}; CPU {cpu_name()} x {cores} cores; torch {torch.__version__}, {threads} CPU thread(s)"
