/**
 * The CUDA backend's contract as seen from a machine without a GPU (CI): the generated
 * CUDA ABI is current and names a twin for every CPU op, the build without nvcc reports
 * CUDA unavailable with a reason, and device tensors fail with clear errors instead of
 * crashing. The GPU itself is checked by `npm run test:cuda` (test/cuda/).
 */
import * as fs from 'fs';
import * as path from 'path';

import { backendInfo } from '../lib/backend';
import { Device, Tensor } from '../lib/tensor';

const root = path.join(__dirname, '..');
// eslint-disable-next-line @typescript-eslint/no-var-requires
const abi = require(path.join(root, 'scripts', 'cuda', 'gen_cuda_abi.js'));

describe('generated CUDA ABI', () => {
  test('csrc/include/rt/cuda_ops.h and csrc/cuda/cuda_stub.cc are current (run scripts/cuda/gen_cuda_abi.js)', () => {
    const { header, stub } = abi.generate();
    expect(fs.readFileSync(path.join(root, 'csrc', 'include', 'rt', 'cuda_ops.h'), 'utf8')).toBe(header);
    expect(fs.readFileSync(path.join(root, 'csrc', 'cuda', 'cuda_stub.cc'), 'utf8')).toBe(stub);
  });

  test('every CPU op has an rt_cuda_ twin implemented in csrc/cuda/*.cu', () => {
    const cu = fs
      .readdirSync(path.join(root, 'csrc', 'cuda'))
      .filter((f) => f.endsWith('.cu'))
      .map((f) => fs.readFileSync(path.join(root, 'csrc', 'cuda', f), 'utf8'))
      .join('\n');
    const missing: string[] = [];
    for (const family of abi.families as string[])
      for (const d of abi.declarations(family) as { name: string }[]) {
        const twin = d.name.replace(/^rt_/, 'rt_cuda_');
        if (!new RegExp(`rt_status ${twin}\\(`).test(cu)) missing.push(twin);
      }
    expect(missing).toEqual([]);
  });
});

const gpu = backendInfo().cuda;
(gpu ? describe.skip : describe)('without a GPU', () => {
  test('backendInfo says why CUDA is unavailable', () => {
    const info = backendInfo();
    expect(info.cuda).toBe(false);
    expect(info.cudaReason).toMatch(/CUDA/);
    expect(info.devices.map((d) => d.type)).toEqual(['cpu']);
  });

  test('a cuda tensor is a clear RT_ERR_UNAVAILABLE error, not a crash', () => {
    expect(() => Tensor.empty([4], 'float32', 'cuda')).toThrow(expect.objectContaining({ code: 'RT_ERR_UNAVAILABLE' }));
    const t = Tensor.from([1, 2, 3]);
    expect(() => t.to('cuda')).toThrow(/CUDA/);
    expect(t.to('cpu')).toBe(t);
    t.dispose();
  });

  test('an unknown device name is rejected', () => {
    expect(() => Tensor.empty([2], 'float32', 'tpu' as Device)).toThrow(/unknown device 'tpu', expected cpu or cuda/);
  });
});
