import { backendInfo, Tensor, tidy, dispose } from '../lib';
import { native } from '../lib/native';

describe('Tensor runtime', () => {
  test('round-trips float32, int32 and bfloat16 data', () => {
    const f = Tensor.from(new Float32Array([1.5, -2.25, 3]), [3]);
    expect(Array.from(f.toFloat32Array())).toEqual([1.5, -2.25, 3]);
    const i = Tensor.from(new Int32Array([7, -1, 2 ** 30]), [3]);
    expect(i.dtype).toBe('int32');
    expect(Array.from(i.toInt32Array())).toEqual([7, -1, 2 ** 30]);
    // 1 + 2^-9 is not representable in bf16: rounds to nearest even (1.0).
    const b = Tensor.from([1 + 2 ** -9, 3.140625, -0.5], [3], 'bfloat16');
    expect(Array.from(b.toFloat32Array())).toEqual([1, 3.140625, -0.5]);
    dispose([f, i, b]);
  });

  test('memory counter tracks allocation and dispose', () => {
    const before = backendInfo().memory;
    const t = Tensor.empty([1000, 3]);
    const mid = backendInfo().memory;
    expect(mid.allocatedBytes - before.allocatedBytes).toBe(12000);
    expect(mid.liveBuffers - before.liveBuffers).toBe(1);
    t.dispose();
    expect(backendInfo().memory.allocatedBytes).toBe(before.allocatedBytes);
    expect(t.disposed).toBe(true);
  });

  test('native buffers are 64-byte aligned (checked through the allocator contract)', () => {
    // rt_alloc rounds to 64 bytes: a 1-element tensor still reports its exact byte size.
    const t = Tensor.empty([1]);
    expect(native().tensor_info(t.handle).bytes).toBe(4);
    t.dispose();
  });

  test('tidy disposes intermediates and keeps results', () => {
    const start = backendInfo().memory.liveBuffers;
    let inner: Tensor | undefined;
    let kept: Tensor | undefined;
    const result = tidy(() => {
      inner = Tensor.zeros([4]);
      kept = Tensor.zeros([2]).keep();
      return { out: Tensor.zeros([3]) };
    });
    expect(inner!.disposed).toBe(true);
    expect(kept!.disposed).toBe(false);
    expect(result.out.disposed).toBe(false);
    expect(backendInfo().memory.liveBuffers).toBe(start + 2);
    dispose([result, kept]);
    expect(backendInfo().memory.liveBuffers).toBe(start);
  });

  test('tidy disposes everything when the function throws', () => {
    const start = backendInfo().memory.liveBuffers;
    expect(() =>
      tidy(() => {
        Tensor.zeros([8]);
        throw new Error('boom');
      }),
    ).toThrow('boom');
    expect(backendInfo().memory.liveBuffers).toBe(start);
  });

  test('reshape shares storage; freed when the last view is disposed', () => {
    const t = Tensor.from(new Float32Array([1, 2, 3, 4, 5, 6]), [2, 3]);
    const v = t.reshape([3, 2]);
    t.dispose();
    expect(Array.from(v.toFloat32Array())).toEqual([1, 2, 3, 4, 5, 6]);
    v.dispose();
    expect(v.disposed).toBe(true);
    expect(() => v.reshape([6])).toThrow(/used after dispose/);
  });

  test('clear errors for bad shapes, data and disposed use', () => {
    expect(() => Tensor.from([1, 2, 3], [2, 2])).toThrow(/shape \[2, 2\] needs 4 values, received 3/);
    expect(() => Tensor.empty([2, -1])).toThrow(/non-negative integer dimensions/);
    expect(() => Tensor.from([1.5], [1], 'int32')).toThrow(/non-int32 value 1.5/);
    const t = Tensor.zeros([2]);
    t.dispose();
    expect(() => t.toFloat32Array()).toThrow(expect.objectContaining({ code: 'RT_ERR_DISPOSED' }));
    const i = Tensor.zeros([2], 'int32');
    expect(() => i.toFloat32Array()).toThrow(/int32/);
    i.dispose();
  });

  test('copyFrom copies element ranges and checks bounds', () => {
    const a = Tensor.from(new Float32Array([1, 2, 3, 4]));
    const b = Tensor.zeros([6]);
    b.copyFrom(a, 2, 1, 3);
    expect(Array.from(b.toFloat32Array())).toEqual([0, 0, 2, 3, 4, 0]);
    expect(() => b.copyFrom(a, 4, 0, 4)).toThrow(/do not fit/);
    dispose([a, b]);
  });

  test('backendInfo describes the engine', () => {
    const info = backendInfo();
    expect(info.cuda).toBe(false);
    expect(info.threads).toBeGreaterThanOrEqual(1);
    expect(['scalar', 'avx2', 'avx512']).toContain(info.simd);
    expect(info.blas).toMatch(/OpenBLAS/i);
    expect(info.version).toMatch(/^\d+\.\d+\.\d+/);
  });
});

describe('tensor binding guards', () => {
  const n = () => native();
  test('tensor_alloc rejects bad sizes and dtypes', () => {
    expect(() => n().tensor_alloc(-1, 0)).toThrow(/'numel' expected an integer in \[0, /);
    expect(() => n().tensor_alloc(4, 9)).toThrow(/'dtype' expected an integer in \[0, 2\], received 9/);
    expect(() => n().tensor_alloc(1.5, 0)).toThrow(/'numel' expected an integer/);
  });
  test('tensor_write checks array type and bounds', () => {
    const h = n().tensor_alloc(4, 0);
    expect(() => n().tensor_write(h, new Int32Array(4), 0)).toThrow(/float32 tensor expects a Float32Array/);
    expect(() => n().tensor_write(h, new Float32Array(3), 2)).toThrow(/3 elements at offset 2 exceed the tensor's 4 elements/);
    n().tensor_free(h);
    expect(() => n().tensor_free(h)).toThrow(/already disposed/);
  });
  test('non-handles are rejected', () => {
    expect(() => (n() as any).tensor_read({}, new Float32Array(1), 0)).toThrow(/'tensor' expected a tensor handle, received a non-tensor value/);
    expect(() => (n() as any).tensor_read(null, new Float32Array(1), 0)).toThrow(/received null/);
    expect(() => (n() as any).tensor_read()).toThrow(/expected 3 arguments, received 0/);
  });
});
