/** swiglu ops (to be implemented). */
export {};
