"""A fake pynvml for the NVML meter's tests, installed at its import site.

It keeps pynvml's real constants, error classes and field-value structure, so only the
driver is pretend: each GPU draws a constant power and its energy counter is that power
integrated over wall time.
"""

import time
import types

import pynvml as real


class FakeGpu:
    def __init__(self, uuid, power_w=200.0, arch=real.NVML_DEVICE_ARCH_HOPPER, counter=True, instant=True):
        self.uuid, self.power_w, self.arch, self.counter, self.instant = uuid, power_w, arch, counter, instant
        self.name = "NVIDIA H100 80GB HBM3"
        self.t0 = time.time()
        self.offset_mj = 5_000_000  # the counter counts from driver load, not from zero
        self.lost = False
        self.refuse: set[str] = set()  # optional reads that raise NotSupported

    def check(self, what=None):
        if self.lost:
            raise real.NVMLError_GpuIsLost()
        if what in self.refuse:
            raise real.NVMLError_NotSupported()

    def energy_mj(self):
        return int(self.offset_mj + self.power_w * (time.time() - self.t0) * 1000)


def make_fake_nvml(gpus, init_error=None):
    fake = types.ModuleType("fake_pynvml")
    for name in dir(real):  # constants, NVMLError and its subclasses, ctypes structs
        if name.startswith(("NVML", "c_nvml")):
            setattr(fake, name, getattr(real, name))
    fake.calls = []

    def device_call(fn):
        def wrapped(gpu, *args):
            fake.calls.append(fn.__name__)
            gpu.check(fn.__name__)
            return fn(gpu, *args)

        wrapped.__name__ = fn.__name__
        setattr(fake, fn.__name__, wrapped)
        return wrapped

    def nvmlInit():
        fake.calls.append("nvmlInit")
        if init_error is not None:
            raise init_error()

    def nvmlShutdown():
        fake.calls.append("nvmlShutdown")

    fake.nvmlInit, fake.nvmlShutdown = nvmlInit, nvmlShutdown
    fake.nvmlDeviceGetCount = lambda: len(gpus)
    fake.nvmlSystemGetDriverVersion = lambda: "550.54.15"
    fake.nvmlSystemGetNVMLVersion = lambda: "12.550.54.15"

    def nvmlDeviceGetHandleByIndex(i):
        if not 0 <= i < len(gpus):
            raise real.NVMLError_InvalidArgument()
        return gpus[i]

    def nvmlDeviceGetHandleByUUID(uuid):
        for g in gpus:
            if g.uuid == uuid:
                return g
        raise real.NVMLError_NotFound()

    fake.nvmlDeviceGetHandleByIndex = nvmlDeviceGetHandleByIndex
    fake.nvmlDeviceGetHandleByUUID = nvmlDeviceGetHandleByUUID

    @device_call
    def nvmlDeviceGetUUID(g):
        return g.uuid

    @device_call
    def nvmlDeviceGetName(g):
        return g.name

    @device_call
    def nvmlDeviceGetArchitecture(g):
        return g.arch

    @device_call
    def nvmlDeviceGetTotalEnergyConsumption(g):
        if not g.counter:
            raise real.NVMLError_NotSupported()
        return g.energy_mj()

    @device_call
    def nvmlDeviceGetPowerUsage(g):
        return int(g.power_w * 1000)

    @device_call
    def nvmlDeviceGetFieldValues(g, field_ids):
        values = (real.c_nvmlFieldValue_t * len(field_ids))()
        for v, fid in zip(values, field_ids):
            v.fieldId = fid
            if fid == real.NVML_FI_DEV_POWER_INSTANT and g.instant:
                v.nvmlReturn = real.NVML_SUCCESS
                v.valueType = real.NVML_VALUE_TYPE_UNSIGNED_INT
                v.value.uiVal = int(g.power_w * 1000)
            else:
                v.nvmlReturn = real.NVML_ERROR_NOT_SUPPORTED
        return values

    @device_call
    def nvmlDeviceGetPowerManagementLimit(g):
        return 700_000

    @device_call
    def nvmlDeviceGetClockInfo(g, clock):
        return {real.NVML_CLOCK_SM: 1980, real.NVML_CLOCK_MEM: 2619}[clock]

    @device_call
    def nvmlDeviceGetUtilizationRates(g):
        return types.SimpleNamespace(gpu=97, memory=41)

    @device_call
    def nvmlDeviceGetTemperature(g, sensor):
        return 61

    @device_call
    def nvmlDeviceGetMemoryInfo(g):
        return types.SimpleNamespace(used=12 * 2**30, total=80 * 2**30)

    return fake
