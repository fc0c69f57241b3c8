// @serialport/binding-mock ships types its package.json `exports` does not expose to NodeNext.
declare module '@serialport/binding-mock' {
  export const MockBinding: {
    createPort(path: string, options?: { echo?: boolean; record?: boolean }): void;
    reset(): void;
  };
}
