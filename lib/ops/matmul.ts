/** matmul ops (to be implemented). */
export {};
