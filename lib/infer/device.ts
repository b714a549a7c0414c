/**
 * Device helpers of the model layer: validating a device name, checking that CUDA is
 * really usable before loading or moving a model there, and zero tensors filled on the
 * device (no host buffer) for caches and gradients.
 */
import { ArgumentError, RouterTuningError } from '../errors';
import { fill } from '../ops';
import { DType, Device, Tensor } from '../tensor';

export const DEVICES: readonly Device[] = ['cpu', 'cuda'];

/**
 * `device` as a Device: throws a clear error for an unknown name, and for 'cuda' when
 * this build or machine cannot use it (the reason is the native backend's message).
 */
export function requireDevice(op: string, device: unknown): Device {
  if (device !== 'cpu' && device !== 'cuda')
    throw new ArgumentError(`${op}: unknown device ${JSON.stringify(device)}, expected 'cpu' or 'cuda'`);
  if (device === 'cuda') {
    let probe: Tensor | undefined;
    try {
      probe = Tensor.empty([1], 'float32', 'cuda');
    } catch (e) {
      const why = e instanceof Error ? e.message : String(e);
      throw new RouterTuningError('RT_ERR_UNAVAILABLE', `${op}: CUDA is unavailable: ${why}`);
    } finally {
      probe?.dispose();
    }
  }
  return device;
}

/** Zeros on `device`: Tensor.zeros on the CPU; on a GPU float32 is filled natively (no host buffer). */
export function zerosOn(shape: readonly number[], dtype: DType, device: Device): Tensor {
  if (device === 'cpu' || dtype !== 'float32') return Tensor.zeros(shape, dtype, device);
  const t = Tensor.empty(shape, dtype, device);
  if (t.numel > 0) fill(t, 0);
  return t;
}
