# GPAW build configuration (read by GPAW's setup through GPAW_CONFIG): link FFTW for the plane-wave FFTs.
# Measured on this machine (GPAW 26.7, C22Fe2N6 slab, PW 500 eV, 3x3x1 k, spin-polarised, one core):
# 85 s per SCF iteration with FFTW against 112 s with the default scipy.fft build; energies identical.
# Install: apt-get install -y libxc-dev libopenblas-dev libfftw3-dev
#          GPAW_CONFIG=dft/gpaw_siteconfig.py CC=g++ pip install --no-binary gpaw gpaw
fftw = True
libraries = ["xc", "fftw3", "openblas"]
